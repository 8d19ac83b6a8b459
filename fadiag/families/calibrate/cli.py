"""``fadiag calibrate``: thresholds from healthy and degenerate runs, as a calibration YAML that ``fadiag audit
--calibration`` reads (fadiag.families.calibrate.api)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ...errors import InputError
from ...cli.app import command
from ...cli.run import checkpoint_opts

_opt = typer.Option
Healthy = Annotated[List[Path], typer.Argument(help="Healthy runs: checkpoints (audited here) or saved audit "
                                               "reports (.json/.jsonl).", show_default=False)]
DegenerateOpt = Annotated[Optional[List[Path]], _opt("--degenerate", "-d", help="A known-bad run (checkpoint or "
                                                     "saved audit report). Repeatable.")]
FlagsOpt = Annotated[str, _opt("--flags", help="The flags to calibrate, comma-separated; the others keep the "
                               "published calibration.")]
NameOpt = Annotated[Optional[str], _opt("--name", help="The calibration's name, shown in every report that uses "
                                        "it (default: the output file's stem, else 'calibrated').")]


@command("healthy degenerate flags name output spec data batches batch_size seed device trust_checkpoint trust_code "
         "threads quiet",
         epilog='\x08\nExample:\n  fadiag calibrate runs/bp_*.pt -d runs/dfa_*.pt -o calib.yaml\n'
                '  fadiag audit new.pt --calibration calib.yaml')
def calibrate(ctx: typer.Context, healthy: Healthy, degenerate: DegenerateOpt = None, flags: FlagsOpt = "a,b,c,d",
              name: NameOpt = None, **shared) -> int:
    """Derive thresholds from healthy and degenerate runs: per flag the healthy range, the degenerate range and a
    threshold with its margin, written as a calibration YAML (stdout, or --output). Exit 1 if they do not
    separate (a degenerate run no flag catches, or a healthy run one does)."""
    from . import api as C
    from ...run.atomic import write_text
    from ...calibration import dump
    from ...text import err

    ids = tuple(f.strip() for f in flags.split(",") if f.strip())
    bad = [f for f in ids if f not in C.RULES]
    if bad or not ids:
        raise InputError(f"expected flags among {', '.join(C.RULES)}, got {flags!r}", source="--flags")
    opts = checkpoint_opts(ctx, headline_acc=None)
    runs = [run for p in healthy for run in _runs(ctx, p, "healthy", opts)]
    runs += [run for p in degenerate or [] for run in _runs(ctx, p, "degenerate", opts)]
    out = ctx.params.get("output")
    cal, summary = C.derive(runs, name or (Path(out).stem if out else "calibrated"), ids)
    text = dump(cal, C.provenance(runs, summary))
    if out:
        write_text(out, text)
    else:
        typer.echo(text, nl=False)
    if not ctx.params.get("quiet"):
        for fid, row in summary["flags"].items():
            err(f"fadiag: ({fid}) healthy {_rng(row['healthy'])}, degenerate {_rng(row['degenerate'])}: threshold "
                f"{row['threshold']:.4g} ({row['margin']})")
        missed = [p["run"] for p in summary["runs"] if bool(p["fires"]) != (p["role"] == "degenerate")]
        err("fadiag: the calibration separates every healthy run from every degenerate one" if summary["separates"]
            else f"fadiag: not separated: {', '.join(missed)}")
    return 0 if summary["separates"] else 1


def _rng(v: list) -> str:
    return f"{min(v):.4g}..{max(v):.4g} ({len(v)})" if v else "none"


def _runs(ctx, path: Path, role: str, opts: dict) -> list:
    """The audit reports of one input: a saved report file (each audit report in it) or a checkpoint audited."""
    from .api import Run
    from ...reports import load_file
    from ..audit.report import AuditReport
    from ...cli.run import one

    if path.suffix.lower() in (".json", ".jsonl"):
        reps = load_file(path)
        if not all(isinstance(r, AuditReport) for r in reps):
            raise InputError("not an audit report (fadiag calibrate reads fadiag.audit reports)", source=str(path))
        if any(r.calibration is None for r in reps):
            raise InputError("written before reports recorded the model's family and batch layout; audit the "
                             "checkpoint again", source=str(path))
        return [Run(path.name if len(reps) == 1 else f"{path.name}#{i}", role, r) for i, r in enumerate(reps)]
    rep, _ = one(ctx, "audit", path, opts)
    return [Run(path.name, role, rep)]
