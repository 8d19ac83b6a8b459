"""TEMPORARY, while issue 11 lands family by family: the lead deletes this file at merge.

Everything here bridges the CLI (which speaks typed reports, fadiag/reports/) to code on this branch that still
speaks the old dicts. Each function is a no-op once the other branches have landed, so a forgotten call is
harmless; the call sites are:

- ``as_report`` (a family API's result, a dict or the old report.AuditReport, as a typed report):
  ``fadiag.sweep.one``, ``fadiag.cli.output.finish`` (inspect, lint, compare) and ``fadiag.cli.credit._toy``.
  At merge: replace ``as_report(x)`` by ``x``.
- ``for_dict_api`` (typed reports as dicts for the dict-era compare_reports and plot_matrix): ``fadiag.cli.compare``
  (``compare_reports``) and ``fadiag.cli.edges._write_matrix_outputs`` (``plot_matrix``). At merge: pass the
  typed reports directly.
- ``alias_v1_views`` (a "/2" report shown by its family's "/1" view): ``fadiag.cli.output._render`` (table,
  markdown), ``fadiag.cli.output.finish`` (plots) and ``fadiag.cli.compare`` (compare's rows). At merge: delete
  the calls; the renderers and compare register their "/2" schemas themselves.
"""

from __future__ import annotations


def as_report(x):
    """A family API's result as a typed report: a ``fadiag.reports.Report`` as is, else through its dict."""
    from .reports import Report, from_dict

    if isinstance(x, Report):
        return x
    return from_dict(x.to_dict() if hasattr(x, "to_dict") else x)


def _dict_era() -> bool:
    """True while the renderers, plot_matrix and compare_reports on this branch still read dicts (fadiag.render
    still has its temporary _bridge); False once the render branch has landed."""
    from . import render

    return hasattr(render, "_bridge")


def for_dict_api(value):
    """``value`` (a typed report, a list of them, or None) as the dict-era compare_reports/plot_matrix take it."""
    if value is None or not _dict_era():
        return value
    if isinstance(value, (list, tuple)):
        return [r.to_dict() for r in value]
    return value.to_dict()


#: where the dict-era views live: view -> (module, registry of schema -> view function, lazy loader or None)
_VIEWS = {"table": ("fadiag.render.table", "TABLES", "_lazy_register"),
          "markdown": ("fadiag.render.markdown", "SECTIONS", None), "plot": ("fadiag.render.plot", "FIGURES", None), "compare": ("fadiag.compare", "_ROWS", None)}


def alias_v1_views(reports, view: str) -> None:
    """Let the dict-era ``view`` ("table", "markdown", "plot", "compare"; others: nothing to do) show each "/2"
    report with its family's "/1" view when it has no "/2" entry yet: the verdict words changed, the keys did not."""
    if not _dict_era() or view not in _VIEWS:
        return
    import importlib

    name, reg, loader = _VIEWS[view]
    mod = importlib.import_module(name)
    registry, load = getattr(mod, reg), getattr(mod, loader) if loader else None
    for r in reports:
        new = r.schema
        old = new[:-2] + "/1" if new.endswith("/2") else None
        if old is None or new in registry:
            continue
        if load is not None and old not in registry:
            load(old)
        if old in registry:
            registry[new] = registry[old]
