"""``fadiag trajectory CKPT...``: audit a training run's checkpoints on the same batches, step by step, and name the
first step (and layer) where each audit flag fires (docs/trajectory.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ...cli.app import command
from ...families.audit.cli import FrozenAccOpt, GrowthOpt, HeadlineOpt, StabilityOpt, ThresholdOpt
from ...cli.options import plot_opt
from ...cli.output import finish, progress_for
from ...cli.run import checkpoint_opts, parse_thresholds
from ...text import err

Run = Annotated[List[Path], typer.Argument(help="A run's checkpoints: files (.pt/.pth/.ckpt/.safetensors/.npz), "
                                           "Hugging Face checkpoint-N folders, or a folder holding them.",
                                           show_default=False)]
PlotOpt = plot_opt("Also draw layers x steps heatmaps of ‖h_l‖ and ‖g_l‖ with the flags marked to "
                   "FILE.png|svg|pdf (needs the 'plot' extra).")


@command("checkpoints spec format output threshold frozen_baseline_acc headline_acc growth stability_layer jobs "
         "resume threads plot data batches batch_size seed device exit_zero trust_checkpoint trust_code quiet",
         epilog='\x08\nExamples:\n  fadiag trajectory runs/dfa/ --spec run.yaml --plot trajectory.png\n'
                '  fadiag trajectory out/checkpoint-* --data eval.npz --jobs 2 --resume traj.jsonl\n'
                '  fadiag trajectory runs/dfa/ -f json | jq .first_flagged')
def trajectory(ctx: typer.Context, checkpoints: Run, threshold: ThresholdOpt = None,
               frozen_baseline_acc: FrozenAccOpt = None, headline_acc: HeadlineOpt = None, growth: GrowthOpt = None,
               stability_layer: StabilityOpt = None, plot: PlotOpt = None, **shared) -> int:
    """Audit every checkpoint of a training run on the same eval batches, in step order: per step the per-layer
    ‖h_l‖ and ‖g_l‖ and the audit's flags, and per flag the first step where it fires and the layer where it
    started. Exit 1 if any flag fires at any step."""
    from .body import run

    opts = checkpoint_opts(ctx, thresholds=parse_thresholds(threshold), headline_acc=headline_acc,
                           frozen_baseline_acc=frozen_baseline_acc, frozen_baseline=None, trainable_blocks=0,
                           growth=growth, stability_layer=stability_layer)
    p = ctx.params
    rep = run(checkpoints, opts, jobs=p.get("jobs", 1), resume=str(p["resume"]) if p.get("resume") else None,
              progress=progress_for(ctx))
    if not ctx.params.get("quiet"):
        for pt in rep.points:  # an inferred step is said on screen, not only in the report
            if pt["step_source"] in ("file name", "checkpoint:epoch"):
                err(f"fadiag: note: {pt['checkpoint']['path']}: step {pt['step']} from its "
                    f"{'file name' if pt['step_source'] == 'file name' else 'epoch entry'}")
    return finish(ctx, [rep], plot=plot, labels=["trajectory"])
