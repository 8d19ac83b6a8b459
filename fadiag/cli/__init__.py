"""fadiag's command line. Each command is thin: parse -> API -> render -> exit code.

- ``app``: the Typer app, one-line usage errors, the guard that maps errors to exit codes, signal handling,
  ``main`` (the console script and ``python -m fadiag``); per-invocation state lives in click's ``ctx.obj``.
- ``options``: the options several commands share, declared once; ``paths``: the files a command reads and
  writes, checked up front; ``output``: the one output path (``finish``) and the progress bars; ``run``: one
  checkpoint or a sweep (fadiag.sweep) for the checkpoint commands.
- one module per command: audit, calibrate, credit, edges, relevance, inspect, lint, report, compare.

torch is never imported at module level here, so ``fadiag --help`` stays instant.
stdout carries the report only; progress, warnings and summaries go to stderr.
"""

from __future__ import annotations

from ..text import err
from .app import _on_signal, app, main, run_guarded, state
from .output import Progress, emit, finish
from .paths import check_output_path

# the commands, in the order --help lists them (each module registers its command on ``app``)
from . import audit, calibrate, credit, edges, relevance, inspect, lint, report, compare  # noqa: E402,F401  isort: skip
from ..trajectory import cli as _trajectory  # noqa: E402,F401  isort: skip

__all__ = ["Progress", "app", "check_output_path", "emit", "err", "finish", "main", "run_guarded", "state"]
