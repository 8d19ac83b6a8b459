"""``fadiag edges``: function -> function edges of a graph-structured network (per checkpoint:
fadiag.families.edges._edges), with the one-checkpoint outputs --matrix, --edges and --plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...errors import InputError
from ...cli.app import command, state
from ...cli.options import plot_opt
from ...cli.output import finish
from ...cli.run import checkpoint_opts, is_sweep, one, sweep

_opt = typer.Option
Str, Int, Float, File = Optional[str], Optional[int], Optional[float], Optional[Path]
Checkpoint = Annotated[Path, typer.Argument(help="Graph-structured network checkpoint (arch gsnn).")]
MethodOpt = Annotated[Str, _opt("--method", help="spearman (average-rank ties) | pearson.")]
RowChunkOpt = Annotated[Int, _opt("--row-chunk", envvar="FADIAG_ROW_CHUNK", help="Rows of the N x N evidence matrix "
                                  "per GEMM: bounds peak memory to ~row_chunk*(N+M)*4 bytes.")]
BootstrapOpt = Annotated[Int, _opt("--bootstrap", help="Average over ITERS seeded resamples of the observations "
                                   "(with replacement).")]
SamplesOpt = Annotated[Int, _opt("--samples", help="Rows per bootstrap resample (default M).")]
PenaltyOpt = Annotated[Float, _opt("--penalty", help="Known-edge penalty α: W *= (1-α)^indeg_known(j) "
                                   "(1+α)^outdeg_known(i).")]
ScaleOpt = Annotated[Optional[bool], _opt("--scale-by-act-mean/--no-scale-by-act-mean", help="Multiply row i by node "
                                          "i's mean activity.")]
TruthOpt = Annotated[File, _opt("--truth", help="True edge list (TSV/CSV/npy) for MRR.")]
HeldOutOpt = Annotated[File, _opt("--held-out", help="Score only these query edges (others in --truth are masked).")]
TopOpt = Annotated[int, _opt("--top", help="Show the K strongest edges.")]
SpoolOpt = Annotated[File, _opt("--spool", help="Out of core: spool the observations to this folder (removed on "
                                "exit) and bound memory by --max-memory.")]
MaxMemoryOpt = Annotated[Str, _opt("--max-memory", help="Memory bound, e.g. 4GiB: spool to disk (--spool, else the "
                                   "temp folder) if the in-memory path needs more (default: 80% of free RAM).")]
#: how the node signals are formed (defaults: the spec's edges.where, .norm, .agg, .loss)
WhereOpt, NormOpt, AggOpt, LossOpt = (Annotated[Str, _opt(f"--{name}", help=text)] for name, text in (
    ("where", "pre | post: activations before or after the norm."), ("norm", "Per-channel transform: l1 | l2 | none."),
    ("agg", "Per-node reduction: sum | mean | max."), ("loss", "ce (class labels) | mse (regression targets).")))
TiesOpt = Annotated[Str, _opt("--ties", help="Spearman ties: average (textbook, default) | ordinal (upstream GSNN's, "
                              "row-order dependent).")]
KnownOpt = Annotated[File, _opt("--known", help="Known function -> function edge list for --penalty (default: the "
                                "model's own).")]
MatrixOpt = Annotated[Str, _opt("--matrix", help="Save the N x N evidence matrix to OUT.npy.")]
EdgesOutOpt = Annotated[Str, _opt("--edges", help="Save every edge ranked: OUT.tsv with source, target, score, rank.")]
PlotOpt = plot_opt("Heatmap of the evidence to FILE.png|svg|pdf.")


@command("checkpoint more method row_chunk bootstrap samples penalty scale_by_act_mean truth held_out top spool "
         "max_memory threads jobs resume scheduler where norm agg loss ties known matrix edges_out plot spec format "
         "output data batches batch_size seed device exit_zero trust_checkpoint trust_code quiet",
         epilog='\x08\nExamples:\n  fadiag edges checkpoints_example/gsnn/gsnn.pt --row-chunk 1024\n  fadiag edges '
                'g.pt --bootstrap 20 --samples 2000 --edges ranked.tsv --matrix W.npy')
def edges(ctx: typer.Context, checkpoint: Checkpoint, method: MethodOpt = None, row_chunk: RowChunkOpt = None,
          bootstrap: BootstrapOpt = None, samples: SamplesOpt = None, penalty: PenaltyOpt = None,
          scale_by_act_mean: ScaleOpt = None, truth: TruthOpt = None, held_out: HeldOutOpt = None, top: TopOpt = 20,
          spool: SpoolOpt = None, max_memory: MaxMemoryOpt = None, where: WhereOpt = None, norm: NormOpt = None,
          agg: AggOpt = None, loss: LossOpt = None, ties: TiesOpt = None, known: KnownOpt = None,
          matrix: MatrixOpt = None, edges_out: EdgesOutOpt = None, plot: PlotOpt = None, **shared) -> int:
    """Infer function -> function edges from activation/gradient rank correlation (streamed over eval
    batches, bounded memory with --row-chunk) and score them against known edges (MRR, Hits@k, random
    baseline). Exit 1 if MRR is not above random or signals are non-finite."""
    from . import EDGES_KEYS

    if matrix and not matrix.endswith(".npy"):
        raise InputError("matrix file must end in .npy", source=f"--matrix {matrix}")
    opts = checkpoint_opts(ctx, top=top, **{k: ctx.params[k] for k in EDGES_KEYS})
    if is_sweep(ctx, **{"--matrix": matrix, "--edges": edges_out, "--plot": plot}):
        return sweep(ctx, "edges", [checkpoint, *(shared["more"] or [])], opts)
    rep, W = one(ctx, "edges", checkpoint, opts)  # per checkpoint: fadiag.families.edges._edges
    _write_matrix_outputs(rep, W, matrix, edges_out, plot)
    _warn_constant_columns(rep, state(ctx).quiet)
    return finish(ctx, [rep], labels=[str(checkpoint)])


def _write_matrix_outputs(rep, W, matrix: Optional[str], edges_out: Optional[str], plot: Optional[str]) -> None:
    from .api import write_edges_tsv, write_matrix

    if matrix:
        write_matrix(W, matrix)
    if edges_out:
        write_edges_tsv(W, edges_out)
    if plot:
        from ...render.plot import plot_matrix

        plot_matrix(W, rep, plot)


def _warn_constant_columns(rep, quiet: bool) -> None:
    cc = rep.constant_columns or {}
    c = cc.get("n_constant_act", 0) + cc.get("n_constant_grad", 0)
    if c and not quiet:
        from ...text import err

        err(f"fadiag: warning: {c} constant node signal column(s) ({cc.get('n_constant_act', 0)} activation, "
            f"{cc.get('n_constant_grad', 0)} gradient): their edges score 0")
