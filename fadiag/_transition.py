"""TEMPORARY, while issue 11 lands family by family: the lead deletes this file at merge.

Everything here bridges the CLI (which speaks typed reports, fadiag/reports/) to code on this branch that still
speaks the old dicts. Each function is a no-op once the other branches have landed, so a forgotten call is
harmless; the call sites are:

- ``as_report`` (a family API's result, a dict or the old report.AuditReport, as a typed report):
  ``fadiag.sweep.one``, ``fadiag.cli.output.finish`` (inspect, lint, compare) and ``fadiag.cli.credit._toy``.
  At merge: replace ``as_report(x)`` by ``x``.
- ``for_dict_api`` (typed reports as dicts for an API still annotated with dicts): ``fadiag.cli.compare``
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


def for_dict_api(fn, param: str, value):
    """``value`` (a typed report, a list of them, or None) as ``fn`` takes its parameter ``param``: the dicts
    while that parameter is annotated with dicts (the old API), else as is."""
    import inspect

    if value is None or "Report" in str(inspect.signature(fn).parameters[param].annotation):
        return value
    if isinstance(value, (list, tuple)):
        return [r.to_dict() for r in value]
    return value.to_dict()


def alias_v1_views(reports, registry: dict, load=None) -> None:
    """Make ``registry`` (schema -> view function) show each "/2" report with its "/1" view when it has no
    "/2" entry yet: the verdict words changed, the keys did not. ``load(schema)`` imports a lazy view module."""
    for r in reports:
        new = r.schema
        old = new[:-2] + "/1" if new.endswith("/2") else None
        if old is None or new in registry:
            continue
        for s in (new, old):
            if load is not None and new not in registry and s not in registry:
                load(s)
        if new not in registry and old in registry:
            registry[new] = registry[old]
