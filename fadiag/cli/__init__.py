"""fadiag's command line. Each command is thin: parse -> API -> render -> exit code.

- ``app``: the Typer app, one-line usage errors, the guard that maps errors to exit codes, signal handling,
  ``main`` (the console script and ``python -m fadiag``); per-invocation state lives in click's ``ctx.obj``.
- ``options``: the options several commands share, declared once; ``paths``: the files a command reads and
  writes, checked up front; ``output``: the one output path (``finish``) and the progress bars; ``run``: one
  checkpoint or a sweep (fadiag.run.sweep) for the checkpoint commands.
- ``report``, and one module per family command (each family's record in fadiag/families/ names it).

torch is never imported at module level here, so ``fadiag --help`` stays instant.
stdout carries the report only; progress, warnings and summaries go to stderr.
"""

from __future__ import annotations

from ..text import err
from .app import _on_signal, app, main, run_guarded, state
from .output import Progress, emit, finish
from .paths import check_output_path


def _register_commands() -> None:
    """Every family's command (fadiag.registry), in the order --help lists them (each module registers its
    command on ``app``); ``report`` (re-render a saved report, any family) sits before ``compare``."""
    import importlib

    from ..registry import families

    fams = families()
    for f in [f for f in fams if f.order < REPORT_ORDER] + [None] + [f for f in fams if f.order >= REPORT_ORDER]:
        importlib.import_module(f"{__name__}.report" if f is None else f.command)


#: where ``fadiag report`` sits among the families' commands in --help
REPORT_ORDER = 70
_register_commands()

__all__ = ["Progress", "app", "check_output_path", "emit", "err", "finish", "main", "run_guarded", "state"]
