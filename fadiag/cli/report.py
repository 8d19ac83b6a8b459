"""``fadiag report``: a saved report re-rendered (read through fadiag.reports.load_file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import command
from .output import finish

ReportFile = Annotated[Path, typer.Argument(help="A JSON (or JSONL) report saved by fadiag.")]


@command("report_file format output exit_zero quiet",
         epilog='\x08\nExample:\n  fadiag report audit.json --format markdown > paper_form.md')
def report(ctx: typer.Context, report_file: ReportFile, **shared) -> int:
    """Re-render a saved report in another format. Exit 1 if it records a flag."""
    from ..reports import load_file

    return finish(ctx, load_file(report_file), saved=True)
