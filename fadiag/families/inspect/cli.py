"""``fadiag inspect``: what a checkpoint holds, read safely, without building a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ...cli.app import command
from ...cli.output import finish

Checkpoint = Annotated[Path, typer.Argument(help="Checkpoint file to look into.")]


@command("checkpoint format output exit_zero trust_checkpoint quiet",
         epilog='\x08\nExample:\n  fadiag inspect downloaded.pt --format table')
def inspect(ctx: typer.Context, checkpoint: Checkpoint, **shared) -> int:
    """Show what a checkpoint holds (keys, shapes, dtypes, non-finite counts, embedded spec, whether it
    needs unsafe unpickling) without building a model or running its code. Exit 1 if something needs
    attention (unsafe pickle, NaN/Inf, fp16)."""
    from .api import inspect_checkpoint

    return finish(ctx, [inspect_checkpoint(str(checkpoint), trust=shared["trust_checkpoint"])])
