"""``fadiag audit``: the four-diagnostic protocol over one checkpoint or many (per checkpoint: fadiag.run.sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ...errors import InputError
from ...cli.app import command
from ...diagnostics.audit_quantities import threshold_help
from ...cli.options import plot_opt
from ...cli.run import checkpoint_opts, parse_thresholds, sweep

_opt = typer.Option
Checkpoints = Annotated[List[Path], typer.Argument(help="Checkpoint file(s): .pt/.pth, .safetensors, .npz (default: "
                                                   "audit.checkpoints in the project config).", show_default=False)]
ThresholdOpt = Annotated[Optional[List[str]], _opt("--threshold", "-t", envvar="FADIAG_THRESHOLD", help=(
    f"Override a threshold, NAME=VALUE ({threshold_help()}). Repeatable."))]
FrozenAccOpt = Annotated[Optional[float], _opt("--frozen-baseline-acc", help="Accuracy (0-1) of the "
                                               "frozen-random-blocks baseline, for diagnostic (d).")]
FrozenOpt = Annotated[Optional[str], _opt("--frozen-baseline", help="'train': train the architecture-matched "
                                          "frozen-blocks baseline on the spec's data.train_path (documented recipe) "
                                          "and use its accuracy.")]
TrainableOpt = Annotated[int, _opt("--trainable-blocks", min=0, help="Depth ladder: with --frozen-baseline train, "
                                   "also train the last K blocks (0 = the frozen-blocks baseline).")]
HeadlineOpt = Annotated[Optional[float], _opt("--headline-acc", help="Headline accuracy (0-1) to judge; default: "
                                              "computed on the eval batches.")]
GrowthOpt = Annotated[Optional[str], _opt("--growth", help="(a) variant: ratio_to_h0 (published default) or per_block "
                                          "(ViT-safe).")]
CalibrationOpt = Annotated[Optional[Path], _opt("--calibration", envvar="FADIAG_CALIBRATION", help=(
    "Calibration YAML written by 'fadiag calibrate' (default: the published one): its thresholds, and the model "
    "families and batch layout inside which a crossed threshold is a walk-back (docs/science.md §1)."))]
StabilityOpt = Annotated[Optional[int], _opt("--stability-layer", help="Layer l* for (c); default max(1, (L+1)//2).")]
PlotOpt = plot_opt("Also draw per-layer ‖h_l‖/‖g_l‖ (log), stability and accuracy to FILE.png|svg|pdf (needs the "
                   "'plot' extra).")


@command("checkpoints spec format output threshold frozen_baseline_acc frozen_baseline trainable_blocks headline_acc "
         "growth stability_layer calibration jobs resume scheduler threads plot data batches batch_size seed device "
         "exit_zero trust_checkpoint trust_code quiet",
         epilog='\x08\nExamples:\n  fadiag audit checkpoints_example/resmlp_dfa.pt\n  fadiag audit ckpts/*.pt '
                '--format jsonl -q | jq -r .verdict\n  fadiag audit ckpt.pt --frozen-baseline train --plot audit.png')
def audit(ctx: typer.Context, checkpoints: Checkpoints, threshold: ThresholdOpt = None,
          frozen_baseline_acc: FrozenAccOpt = None, frozen_baseline: FrozenOpt = None,
          trainable_blocks: TrainableOpt = 0, headline_acc: HeadlineOpt = None, growth: GrowthOpt = None, stability_layer: StabilityOpt = None,
          calibration: CalibrationOpt = None, plot: PlotOpt = None, **shared) -> int:
    """Run the four-diagnostic protocol (residual scale, BP reference validity, cross-batch stability,
    frozen-random baseline) and print a verdict. Exit 1 if anything is flagged."""
    thr = parse_thresholds(threshold)
    if frozen_baseline is not None and frozen_baseline != "train":
        raise InputError(f"expected 'train', got {frozen_baseline!r}", source="--frozen-baseline")
    if trainable_blocks and frozen_baseline != "train":
        raise InputError("only meaningful with --frozen-baseline train", source="--trainable-blocks")
    if frozen_baseline is not None and frozen_baseline_acc is not None:
        raise InputError("give either --frozen-baseline-acc or --frozen-baseline train, not both",
                         source="--frozen-baseline")
    opts = checkpoint_opts(ctx, thresholds=thr, headline_acc=headline_acc, frozen_baseline_acc=frozen_baseline_acc,
                           frozen_baseline=frozen_baseline, trainable_blocks=trainable_blocks, growth=growth,
                           stability_layer=stability_layer, calibration=calibration)
    return sweep(ctx, "audit", checkpoints, opts, plot=plot)  # per checkpoint: fadiag.families.audit._audit
