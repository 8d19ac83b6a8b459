"""``fadiag relevance``: per-feature, per-head relevance of a multi-head online learner (per checkpoint:
fadiag.families.relevance._relevance)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...cli.app import command
from ...cli.options import plot_opt
from ...cli.output import finish
from ...cli.run import checkpoint_opts, is_sweep, one, sweep

_opt = typer.Option
Checkpoint = Annotated[Path, typer.Argument(help="Multi-head learner checkpoint (.pt, or .npz of plain arrays).")]
SensitivityOpt = Annotated[bool, _opt("--sensitivity", help="Also the Jacobian tier: mean |d pred_h / d x_raw| over "
                                      "the eval rows.")]
ObservationOpt = Annotated[Optional[str], _opt("--observation", help="Jacobian at one point: a row index of the eval "
                                               "data, or comma-separated values.")]
FeatureNamesOpt = Annotated[Optional[str], _opt("--feature-names", help="Comma-separated feature names (default: the "
                                                "spec's, else feature_i).")]
HeadNamesOpt = Annotated[Optional[str], _opt("--head-names", help="Comma-separated head names (default: the spec's, "
                                             "else head_i).")]
StepSizesOpt = Annotated[str, _opt("--step-sizes", help="auto | step_sizes | log_step_sizes (IDBD, exponentiated) | "
                                   "adam (from the optimizer state: lr/(sqrt(v_hat)+eps)) | step_size | none.")]
PlotOpt = plot_opt("Bar chart of weight relevance per head to FILE.png|svg|pdf (needs the 'plot' extra).")


@command("checkpoint more sensitivity observation feature_names head_names step_sizes plot threads jobs resume "
         "scheduler spec format output data device exit_zero trust_checkpoint trust_code quiet",
         epilog='\x08\nExamples:\n  fadiag relevance checkpoints_example/multihead/multihead.pt --sensitivity\n  '
                'fadiag relevance learner.npz --spec learner.yaml --observation 0.1,2,...')
def relevance(ctx: typer.Context, checkpoint: Checkpoint, sensitivity: SensitivityOpt = False,
              observation: ObservationOpt = None, feature_names: FeatureNamesOpt = None,
              head_names: HeadNamesOpt = None, step_sizes: StepSizesOpt = "auto", plot: PlotOpt = None, **shared) -> int:
    """Per-feature, per-head relevance of a multi-head online learner: path-norm weight relevance,
    step-size and trace activity, normaliser statistics, head reliance; --sensitivity adds Jacobians."""
    split = lambda s: [v.strip() for v in s.split(",")] if s else None  # noqa: E731
    opts = checkpoint_opts(ctx, feature_names=split(feature_names), head_names=split(head_names),
                           sensitivity=sensitivity, observation=observation, step_sizes=step_sizes)
    if is_sweep(ctx, **{"--plot": plot}):
        return sweep(ctx, "relevance", [checkpoint, *(shared["more"] or [])], opts)
    rep, _ = one(ctx, "relevance", checkpoint, opts)  # per checkpoint: fadiag.families.relevance._relevance
    return finish(ctx, [rep], plot=plot, labels=[str(checkpoint)])
