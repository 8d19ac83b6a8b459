"""The one family registry: every family (audit, credit, edges, ...) declares itself in a module under
fadiag/families/ as ``FAMILY = Family(...)``, and the CLI, sweeps, ``fadiag report``, ``compare``, every format
and the Python API discover it here. The kernel (checkpoint, spec, subject, data, stream, models, the report
envelope, the render machinery, the sweep runner, the CLI app) never imports a family: it asks this module.

A reference is a dotted module path, or ``module:attribute``; nothing is imported until it is used, so
``fadiag --help`` stays torch-free. Adding a family is one new module under fadiag/families/ (and its code).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    """One family. ``order``: its place in ``fadiag --help``; ``command``: the module that registers its command
    on the CLI app; ``report``: the module that defines and registers its Report classes (its schemas);
    ``body``: the per-checkpoint function (path, opts, progress) -> (report, extra) for a checkpoint family
    (sweepable); ``forms``: format -> "module:function" (table: r -> [renderables], markdown: r -> str,
    plot: (plt, reports) -> figure); ``api``: public name -> module for ``fadiag.<name>``; ``spec_section``:
    the spec section it reads (a field of fadiag.spec.Spec) and ``spec_check``: "module:function" (spec) ->
    None raising SpecError for a bad value in it; ``spec_defaults``: CLI option -> (spec section, field);
    ``example``: the argv after ``fadiag <name>`` of a shipped example, run from the repo root ({tmp}: a scratch
    folder) by the tests (tests/_shipped.py; the conformance test) when they name none of their own."""

    name: str
    order: int
    command: str | None = None
    report: str | None = None
    body: str | None = None
    forms: dict = field(default_factory=dict)
    api: dict = field(default_factory=dict)
    spec_section: str | None = None
    spec_check: str | None = None
    spec_defaults: dict = field(default_factory=dict)
    example: tuple = ()


def resolve(ref: str):
    """A "module" or "module:attribute" reference, imported."""
    mod, _, attr = ref.partition(":")
    m = importlib.import_module(mod)
    return getattr(m, attr) if attr else m


@functools.lru_cache(maxsize=1)
def _all() -> tuple:
    from . import families as pkg

    found = []
    for info in pkgutil.iter_modules(pkg.__path__):
        fam = getattr(importlib.import_module(f"{pkg.__name__}.{info.name}"), "FAMILY", None)
        if isinstance(fam, Family):
            found.append(fam)
    return tuple(sorted(found, key=lambda f: (f.order, f.name)))


def families() -> tuple:
    """Every registered family, in ``--help`` order."""
    return _all()


def get(name: str) -> Family | None:
    return next((f for f in _all() if f.name == name), None)


def checkpoint_kinds() -> tuple:
    """The families with a per-checkpoint body (what ``fadiag.run.sweep.run_sweep`` runs)."""
    return tuple(f.name for f in _all() if f.body)


def body(name: str):
    f = get(name)
    if f is None or not f.body:
        raise ValueError(f"kind must be one of {checkpoint_kinds()}, got {name!r}")
    return resolve(f.body)


def form(name: str, fmt: str):
    """The family's form for a format ("table", "markdown", "plot"), or None."""
    f = get(name)
    ref = f.forms.get(fmt) if f else None
    return resolve(ref) if ref else None


def load_reports() -> None:
    """Import every family's report module (each registers its schemas with fadiag.reports.base)."""
    for f in _all():
        if f.report:
            importlib.import_module(f.report)


def api_names() -> dict:
    """public name -> module, over every family (``fadiag.<name>``)."""
    return {n: m for f in _all() for n, m in f.api.items()}


def spec_defaults() -> dict:
    return {k: v for f in _all() for k, v in f.spec_defaults.items()}
