"""``fadiag credit``: per-layer credit-assignment metrics (per checkpoint: fadiag.families.credit._credit), or the exact-costate
check on the toy linear-quadratic system."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .signals import signals_help
from ...errors import InputError
from ...cli.app import command
from ...cli.options import plot_opt
from ...cli.output import finish
from ...cli.run import checkpoint_opts, is_sweep, one, parse_thresholds, sweep

_opt = typer.Option
Checkpoint = Annotated[Optional[Path], typer.Argument(help="Checkpoint file (not needed with --toy-lq).")]
SignalOpt = Annotated[Optional[str], _opt("--signal", help=f"Credit signal a_l: {signals_help()}. "
                                          "Default: credit.signal in the spec.")]
InitOpt = Annotated[Optional[Path], _opt("--init", help="Init checkpoint, for feature drift M_l.")]
TensorsOpt = Annotated[Optional[Path], _opt("--tensors", help="Precomputed a_l (.pt/.npz) for --signal tensors.")]
EpsOpt = Annotated[Optional[float], _opt("--eps", help="Perturbation size ε for ρ_l (default 1e-3).")]
NDirsOpt = Annotated[Optional[int], _opt("--n-dirs", help="Random directions M for ρ_l (default 32).")]
EtaOpt = Annotated[Optional[List[float]], _opt("--eta", help="Nudging step η (repeatable; default 0.01).")]
ToyOpt = Annotated[bool, _opt("--toy-lq", help="Run the exact-costate check on the built-in toy linear-quadratic "
                              "system (BP ≈ 1, DFA ≈ 0).")]
ToyDOpt = Annotated[int, _opt("--toy-d", help="Toy LQ width.")]
ToyDepthOpt = Annotated[int, _opt("--toy-depth", help="Toy LQ depth L.")]
PlotOpt = plot_opt("Per-layer Γ_l, ρ_l and the norms to FILE.png|svg|pdf (needs the 'plot' extra).")
ThresholdOpt = Annotated[Optional[List[str]], _opt("--threshold", "-t", help="NAME=VALUE: rho_deep_floor (0.5), "
                                                   "g_norm_floor (1e-7). Repeatable.")]


@command("checkpoint more signal init tensors eps n_dirs eta toy_lq toy_d toy_depth threads jobs resume scheduler plot "
         "threshold spec format output data batch_size seed device exit_zero trust_checkpoint trust_code quiet",
         epilog='\x08\nExamples:\n  fadiag credit checkpoints_example/resmlp_dfa.pt\n  fadiag credit ckpt.pt --signal '
                'bp --eta 0.01 --eta 0.1\n  fadiag credit --toy-lq')
def credit(ctx: typer.Context, checkpoint: Checkpoint = None, signal: SignalOpt = None, init: InitOpt = None,
           tensors: TensorsOpt = None, eps: EpsOpt = None, n_dirs: NDirsOpt = None, eta: EtaOpt = None,
           toy_lq: ToyOpt = False, toy_d: ToyDOpt = 16, toy_depth: ToyDepthOpt = 6, plot: PlotOpt = None,
           threshold: ThresholdOpt = None, **shared) -> int:
    """Per-layer credit-assignment metrics: Γ_l (offline BP cosine, with ‖a‖ and ‖g‖), ρ_l (perturbation
    correlation), Δ_l (nudging), M_l (feature drift), deep-only and all-layer means. Exit 1 if flagged."""
    sweeping = is_sweep(ctx, **{"--plot": plot, "--toy-lq": toy_lq})
    if toy_lq:
        toy = _toy(toy_d, toy_depth, shared["batch_size"], shared["seed"], shared["threads"])
        return finish(ctx, [toy], plot=plot, labels=["toy LQ"])
    if checkpoint is None:
        raise InputError("give a checkpoint, or --toy-lq", source="fadiag credit")
    opts = checkpoint_opts(ctx, signal=signal, init=init, tensors=tensors, eps=eps, n_dirs=n_dirs, eta=eta,
                           thresholds=parse_thresholds(threshold))
    if sweeping:
        return sweep(ctx, "credit", [checkpoint, *(shared["more"] or [])], opts)
    rep, _ = one(ctx, "credit", checkpoint, opts)  # per checkpoint: fadiag.families.credit._credit
    return finish(ctx, [rep], plot=plot, labels=[str(checkpoint)])


def _toy(d: int, depth: int, batch_size: Optional[int], seed: Optional[int], threads: Optional[int]):
    from .api import toy_lq
    from ...run.sweep import apply_threads

    runtime = apply_threads(threads)
    return toy_lq(d=d, depth=depth, batch=batch_size or 64, seed=seed or 0).replace(runtime=runtime)
