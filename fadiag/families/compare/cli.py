"""``fadiag compare``: saved reports side by side, and a regression gate against a baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ...errors import InputError
from ...cli.app import command
from ...cli.output import finish

Reports = Annotated[List[Path], typer.Argument(help="Saved JSON/JSONL reports to show side by side.")]
BaselineOpt = Annotated[Optional[Path], typer.Option("--baseline", help="A saved baseline report: exit 1 if any "
                                                     "report regressed against it.")]
MaxRelOpt = Annotated[Optional[float], typer.Option("--max-rel-change", help="Also a regression: a flag value changing "
                                                    "by more than this fraction.")]


@command("reports baseline max_rel_change format output exit_zero quiet",
         epilog='\x08\nExamples:\n  fadiag compare bp.json dfa.json\n  fadiag compare new.json --baseline '
                'main.json --max-rel-change 0.5')
def compare(ctx: typer.Context, reports: Reports, baseline: BaselineOpt = None, max_rel_change: MaxRelOpt = None,
            **shared) -> int:
    """Show saved reports side by side (BP against DFA, say); with --baseline, a regression gate (exit 1)."""
    from . import api as C
    from ...reports import load_file

    if max_rel_change is not None and baseline is None:
        raise InputError("only meaningful with --baseline", source="--max-rel-change")
    loaded = [r for p in reports for r in load_file(p)]
    base = load_file(baseline) if baseline else None
    rep = C.compare_reports(loaded, base, max_rel_change=max_rel_change)
    return finish(ctx, [rep])
