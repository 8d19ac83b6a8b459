"""``fadiag lint``: the published evaluation pitfalls, found in training code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ...cli.app import command
from ...cli.output import finish

Paths = Annotated[List[Path], typer.Argument(help="Python files or folders of a training code base.")]
RuleOpt = Annotated[Optional[List[str]], typer.Option("--rule", help=(
    "Only these rules (repeatable): norm-p-minus-1, cosine-eps, fp16-metrics, feedback-redraw, self-cosine-fallback."))]


@command("paths rule format output exit_zero quiet", epilog='\x08\nExample:\n  fadiag lint src/ --format github')
def lint(ctx: typer.Context, paths: Paths, rule: RuleOpt = None, **shared) -> int:
    """Grep training code for the published evaluation pitfalls (.norm(-1), cosine_similarity on gradients,
    fp16 metric code, redrawn feedback matrices, 1.0 fallbacks) and report file:line. Exit 1 on findings."""
    from .api import lint_paths

    return finish(ctx, [lint_paths([str(p) for p in paths], rule)])
