"""Per-layer credit metrics: how well a learning rule's credit signal a_l matches backprop.

Pure tensor math (docs/science.md §2): no printing, no file reading, no exits. Notation (docs/science.md §1):
h_l (B, d) is the residual stream after l blocks, g_l = dLoss/dh_l, a_l (B, d) the credit signal a
learning rule delivers to layer l, B the batch size, d the width.

Every small-magnitude quantity (norms, dot products, cosines, loss differences, correlations) is
computed in float64 whatever the input dtype (docs/science.md §2 pitfall 3: fp16 flushes BP gradients of
~5e-10 to zero, and fp16 dot products overflow at |x| ~ 256). Functions that call the network
(``forward_fn``) call it in the dtype of ``h`` (the model dtype) and upcast its output.

Undefined is never silently replaced by a number: a zero-norm row has an undefined cosine (NaN, not
0), non-finite inputs propagate to NaN, and aggregates report how many entries they skipped
(pitfalls 2, 5, 6, 6.5).

Feature drift M_l is in ``diagnostics/drift.py``, the toy linear-quadratic system in ``diagnostics/credit_toy.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

from .common import G_NORM_FLOOR, STD_FLOOR  # (b)'s floor; Pearson is 0 below STD_FLOOR (ρ_l)

F64 = torch.float64

ForwardFn = Callable[["Tensor"], "Tensor"]


# --------------------------------------------------------------------------------------------------
# norms and cosines
# --------------------------------------------------------------------------------------------------


def row_norms(x: Tensor) -> Tensor:
    """Per-sample L2 norm along the feature (last) dimension, in float64.

    ‖x_b‖ = sqrt(Σ_i x_{b,i}²).  x: (B, d) (or (..., d)) -> (B,) (or (...)), float64.

    docs/science.md §2 pitfall 1: ``x.norm(-1)`` is the p = -1 "norm" of the whole tensor, not this.
    Non-finite entries give a non-finite norm (Inf or NaN), never a clean number.
    """
    if x.dim() == 0:
        raise ValueError("row_norms needs at least one dimension (the features)")
    return torch.linalg.vector_norm(x.detach().to(F64), ord=2, dim=-1)


def per_sample_cosine(a: Tensor, g: Tensor) -> Tensor:
    """Per-sample cosine cos_b = a_b·g_b / (‖a_b‖ ‖g_b‖), computed by hand in float64.

    a, g: (B, d) (or equal shapes (..., d)) -> (B,) float64.

    No eps clamp (docs/science.md §2 pitfall 2: ``F.cosine_similarity`` clamps the divisor at 1e-8, which
    shrinks Γ ~100x when ‖g‖ ≈ 1e-10). Each row is divided by its own norm before the dot product, so
    magnitudes far from 1 neither underflow nor overflow. A zero-norm row has no direction: its cosine
    is NaN (undefined), not 0. A row with NaN or Inf gives NaN.
    """
    if a.shape != g.shape:
        raise ValueError(f"per_sample_cosine: shapes differ, a {tuple(a.shape)} vs g {tuple(g.shape)}")
    a64 = a.detach().to(F64)
    g64 = g.detach().to(F64)
    a_unit = a64 / row_norms(a64).unsqueeze(-1)
    g_unit = g64 / row_norms(g64).unsqueeze(-1)
    return (a_unit * g_unit).sum(dim=-1)


def _median(x: Tensor) -> float:
    """The audit's median: torch.median's lower median (the reference protocol's), NaN if any entry is NaN.
    So ``g_norm_mean_ce`` equals the audit's ‖g_l‖ on the same batch."""
    from .protocol import DEFAULT_MEDIAN, median

    return median(x, DEFAULT_MEDIAN)


def offline_bp_cosine(a: Tensor, g: Tensor, floor: float = G_NORM_FLOOR) -> dict:
    """Offline BP cosine Γ_l (docs/science.md §2, first row) with the norms shown beside it (pitfall 2).

    a: credit signal (B, d); g: BP gradient g_l (B, d), taken with the per-sample loss summed.

    Returns a dict:
      gamma         mean over the batch of per-sample cos(a_b, g_b); rows whose cosine is undefined
                    (zero norm, non-finite) are excluded and counted in ``n_undefined``; NaN when
                    every row is undefined.
      a_norm        median over the batch of ‖a_b‖ (torch.median's lower median, as the audit; NaN if any is NaN).
      g_norm        median over the batch of ‖g_b‖.
      interpretable True only when g_norm is finite and >= ``floor`` (the (b) floor, 1e-7), gamma is
                    finite, and every entry of a and g is finite. Below the floor g is numerical noise
                    and Γ means nothing.
      n_samples, n_undefined, nonfinite_inputs (bool), floor.
    """
    cos = per_sample_cosine(a, g)
    defined = ~torch.isnan(cos)
    n_defined = int(defined.sum())
    gamma = float(cos[defined].mean()) if n_defined else math.nan
    a_norm = _median(row_norms(a))
    g_norm = _median(row_norms(g))
    nonfinite = not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(g).all()))
    interpretable = (
        math.isfinite(g_norm) and g_norm >= floor and math.isfinite(gamma) and not nonfinite
    )
    return {
        "gamma": gamma,
        "a_norm": a_norm,
        "g_norm": g_norm,
        "interpretable": bool(interpretable),
        "n_samples": int(cos.numel()),
        "n_undefined": int(cos.numel() - n_defined),
        "nonfinite_inputs": nonfinite,
        "floor": float(floor),
    }


# --------------------------------------------------------------------------------------------------
# perturbation correlation and nudging (these call the rest of the network)
# --------------------------------------------------------------------------------------------------


def _check_pair(h: Tensor, a: Tensor, name: str) -> None:
    if h.dim() != 2:
        raise ValueError(f"{name}: h must be (B, d), got {tuple(h.shape)}")
    if a.shape != h.shape:
        raise ValueError(f"{name}: a {tuple(a.shape)} must have the shape of h {tuple(h.shape)}")


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard Gaussian draws in float64, on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, dtype=F64, device=gen_device).to(device)


def _draws(given: Tensor | None, n: int, shape, generator, device, count: str, what: tuple) -> Tensor:
    """(n, B, d) standard Gaussian draws in float64 (``count`` names n in the error), or ``given`` checked to be
    (M, B, d) and cast to float64 (``what``: its name and the name of its first dimension, for the error)."""
    B, d = shape
    if given is None:
        if n < 1:
            raise ValueError(f"{count} must be >= 1, got {n}")
        return _randn((n, B, d), generator, device)
    if given.dim() != 3 or tuple(given.shape[1:]) != (B, d):
        raise ValueError(f"{what[0]} must be ({what[1]}, {B}, {d}), got {tuple(given.shape)}")
    return given.detach().to(device=device, dtype=F64)


def _losses(forward_fn: ForwardFn, x: Tensor, n_rows: int, name: str) -> Tensor:
    out = forward_fn(x)
    if out.shape != (n_rows,):
        raise ValueError(f"{name}: forward_fn must return per-sample losses ({n_rows},), got {tuple(out.shape)}")
    return out.detach().to(F64)


def _perturbations(
    h: Tensor, eps: float, n_dirs: int, generator: torch.Generator | None, directions: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The perturbed inputs (M, B, d) in h's dtype and the perturbations actually applied (float64).

    v_{m,b} = z_{m,b} / (‖z_{m,b}‖ + 1e-8), z standard Gaussian (or ``directions``). The applied
    perturbation is δ = cast(h + εv) − h, measured after rounding to h's dtype: identical to εv in
    float64, and the honest one in fp16/bf16 where εv is partly rounded away.
    """
    z = _draws(directions, n_dirs, h.shape, generator, h.device, "n_dirs", ("directions", "M"))
    v = z / (row_norms(z).unsqueeze(-1) + 1e-8)
    h64 = h.detach().to(F64)
    h_pert = (h64.unsqueeze(0) + eps * v).to(h.dtype)
    delta = h_pert.to(F64) - h64.unsqueeze(0)
    return h_pert, delta


def _pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two equal-size float64 tensors (flattened); 0 when either std < 1e-12.

    Population moments (the ratio does not depend on ddof). Non-finite input gives NaN, never 0.
    """
    x = x.reshape(-1)
    y = y.reshape(-1)
    if not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(y).all())):
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    sx = float(xc.pow(2).mean().sqrt())
    sy = float(yc.pow(2).mean().sqrt())
    if sx < STD_FLOOR or sy < STD_FLOOR:
        return 0.0
    return float((xc * yc).mean()) / (sx * sy)


def _rho(h, a, forward_fn, eps, n_dirs, generator, directions, name: str, batched: bool) -> float:
    """ρ_l of :func:`perturbation_correlation`; ``batched``: all M perturbations in one forward_fn call, else M."""
    _check_pair(h, a, name)
    B, d = h.shape
    h_pert, delta = _perturbations(h, eps, n_dirs, generator, directions)
    M = h_pert.shape[0]
    with torch.no_grad():
        base = _losses(forward_fn, h.detach(), B, name)
        if batched:
            pert = _losses(forward_fn, h_pert.reshape(M * B, d), M * B, name).reshape(M, B)
        else:
            pert = torch.stack([_losses(forward_fn, h_pert[m], B, name) for m in range(M)])
    true_delta = pert - base.unsqueeze(0)
    predicted = (a.detach().to(F64).unsqueeze(0) * delta).sum(dim=-1)
    return _pearson(predicted, true_delta)


def perturbation_correlation(h: Tensor, a: Tensor, forward_fn: ForwardFn, eps: float = 1e-3, n_dirs: int = 32,
                             generator: torch.Generator | None = None, *, directions: Tensor | None = None) -> float:
    """Perturbation correlation ρ_l (docs/science.md §2): does a_l predict how the loss responds to h_l?

    h: (B, d) hidden state; a: (B, d) credit signal; forward_fn: (N, d) -> (N,) per-sample loss of
    the rest of the network from layer l (CE with reduction "none"), called in h's dtype.

    For M = ``n_dirs`` Gaussian directions v_{m,b}, unit-normalised per sample (divisor ‖z‖ + 1e-8):
        predicted Δ_{m,b} = a_b · δ_{m,b},   δ = εv (as applied after rounding to h's dtype)
        true Δ_{m,b}      = loss(h_b + δ_{m,b}) − loss(h_b)
    ρ = Pearson correlation over all M·B pairs, in float64; 0 when either side has std < 1e-12;
    NaN when any Δ is non-finite. Readings: the BP gradient ≈ 0.9965, a random vector ≈ 0.

    All M perturbations go through ONE batched call of forward_fn on an (M·B, d) tensor, plus one call
    for the base loss. ``directions`` (M, B, d) replaces the Gaussian draws (before normalisation);
    otherwise they are drawn as ``torch.randn(M, B, d, dtype=float64, generator=generator)``.
    Runs under ``torch.no_grad()``.
    """
    return _rho(h, a, forward_fn, eps, n_dirs, generator, directions, "perturbation_correlation", True)


def perturbation_correlation_sequential(h: Tensor, a: Tensor, forward_fn: ForwardFn, eps: float = 1e-3,
                                        n_dirs: int = 32, generator: torch.Generator | None = None, *,
                                        directions: Tensor | None = None) -> float:
    """Same as :func:`perturbation_correlation` but with M separate forward_fn calls (B rows each).

    The peer the benchmark compares against (the reference implementation's loop). Same directions
    for the same generator state, same numbers to ~1e-10 in float64.
    """
    return _rho(h, a, forward_fn, eps, n_dirs, generator, directions, "perturbation_correlation_sequential", False)


def nudging_delta(
    h: Tensor, a: Tensor, forward_fn: ForwardFn, eta: float | Sequence[float] = 0.01
) -> float | dict[float, float]:
    """Nudging test Δ_l (docs/science.md §2): does a step against a_l lower the loss?

    h, a: (B, d); forward_fn: (N, d) -> (N,) per-sample loss, called in h's dtype.
        rms(a_b) = sqrt(mean_i a_{b,i}²),   a_n = a_b / (rms(a_b) + 1e-6)
        Δ = mean_b [ loss(h_b − η a_n,b) − loss(h_b) ]            (differences in float64)
    Negative = the credit lowers the loss. ``eta`` a number -> float; a sequence of etas -> dict
    {eta: Δ}, all etas evaluated in one batched call. Runs under ``torch.no_grad()``.
    """
    _check_pair(h, a, "nudging_delta")
    single = isinstance(eta, (int, float))
    etas = [float(eta)] if single else [float(e) for e in eta]
    if not etas:
        raise ValueError("nudging_delta: no eta given")
    B, d = h.shape
    a64 = a.detach().to(F64)
    rms = a64.pow(2).mean(dim=-1, keepdim=True).sqrt()
    a_n = a64 / (rms + 1e-6)
    h64 = h.detach().to(F64)
    eta_t = torch.tensor(etas, dtype=F64, device=h.device).view(-1, 1, 1)
    nudged = (h64.unsqueeze(0) - eta_t * a_n.unsqueeze(0)).to(h.dtype).reshape(len(etas) * B, d)
    with torch.no_grad():
        base = _losses(forward_fn, h.detach(), B, "nudging_delta")
        moved = _losses(forward_fn, nudged, len(etas) * B, "nudging_delta").reshape(len(etas), B)
    deltas = (moved - base.unsqueeze(0)).mean(dim=1)
    out = {e: float(v) for e, v in zip(etas, deltas)}
    return out[etas[0]] if single else out


# --------------------------------------------------------------------------------------------------
# bridge residual
# --------------------------------------------------------------------------------------------------


def bridge_residual(
    h_l: Tensor,
    h_next: Tensor,
    value_fn: Callable[[Tensor], Tensor],
    target_fn: Callable[[Tensor], Tensor],
    K: int = 8,
    lam: float = 0.1,
    sigma: float = 0.1,
    generator: torch.Generator | None = None,
    *,
    noise: Tensor | None = None,
) -> float:
    """Bridge residual R_l (docs/science.md §2): is the value net consistent with its soft-min target?

    h_l: (B, d); h_next: (B, d') the next hidden state h_{l+1}; value_fn: (B, d) -> (B,) V(h_l)
    (bind layer index / time arguments in a closure); target_fn: (N, d') -> (N,) V̄, the EMA target
    net at layer l+1.
        ξ_k ~ N(0, I), k = 1..K;   V̄_{k,b} = target_fn(h_next_b + σ ξ_{k,b})
        target_b = −λ · logsumexp_k(−V̄_{k,b} / λ) + λ · log K        (a soft minimum over k)
        R = mean_b | V(h_l)_b − target_b |                           (float64)
    0 = the value function is consistent. The K noisy states are evaluated in one call on (K·B, d')
    rows. ``noise`` (K, B, d') replaces the draws ``torch.randn(K, B, d', dtype=float64, generator)``.
    Runs under ``torch.no_grad()``.
    """
    if h_l.dim() != 2 or h_next.dim() != 2 or h_l.shape[0] != h_next.shape[0]:
        raise ValueError(f"bridge_residual: h_l {tuple(h_l.shape)} and h_next {tuple(h_next.shape)} "
                         "must be (B, d) with the same B")
    if lam <= 0:
        raise ValueError(f"bridge_residual: lam must be > 0, got {lam}")
    B, d = h_next.shape
    xi = _draws(noise, K, h_next.shape, generator, h_next.device, "bridge_residual: K", ("noise", "K"))
    K = xi.shape[0]
    noisy = (h_next.detach().to(F64).unsqueeze(0) + sigma * xi).to(h_next.dtype).reshape(K * B, d)
    with torch.no_grad():
        v = _losses(value_fn, h_l.detach(), B, "bridge_residual value_fn")
        vbar = _losses(target_fn, noisy, K * B, "bridge_residual target_fn").reshape(K, B)
    target = -lam * torch.logsumexp(-vbar / lam, dim=0) + lam * math.log(K)
    return float((v - target).abs().mean())


# --------------------------------------------------------------------------------------------------
# credit signals
# --------------------------------------------------------------------------------------------------


def output_error(logits: Tensor, y: Tensor) -> Tensor:
    """e = softmax(logits) − onehot(y), float64. logits (B, C), y (B,) integer labels -> (B, C).

    This is d(per-sample CE)/d logits, the error DFA broadcasts (docs/science.md §2, "where a_l comes from").
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, C), got {tuple(logits.shape)}")
    B, C = logits.shape
    y = y.reshape(-1)
    if y.shape[0] != B:
        raise ValueError(f"labels have {y.shape[0]} entries for a batch of {B}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if B and (int(y.min()) < 0 or int(y.max()) >= C):
        raise ValueError(f"labels must be in [0, {C}), got range [{int(y.min())}, {int(y.max())}]")
    p = torch.softmax(logits.detach().to(F64), dim=-1)
    return p - torch.nn.functional.one_hot(y.long(), C).to(device=p.device, dtype=F64)


def _as_classes_first(Bm: Tensor, C: int, layout: str, index: int) -> Tensor:
    if Bm.dim() != 2:
        raise ValueError(f"feedback[{index}] must be 2-D, got {tuple(Bm.shape)}")
    r, c = Bm.shape
    if layout == "classes_first":
        if r != C:
            raise ValueError(f"feedback[{index}] {tuple(Bm.shape)}: expected (n_classes={C}, d)")
        return Bm
    if layout == "classes_last":
        if c != C:
            raise ValueError(f"feedback[{index}] {tuple(Bm.shape)}: expected (d, n_classes={C})")
        return Bm.T
    if layout != "auto":
        raise ValueError(f"layout must be 'auto', 'classes_first' or 'classes_last', got {layout!r}")
    if r == C and c == C:
        raise ValueError(f"feedback[{index}] is square ({C}x{C}): orientation is ambiguous; "
                         "pass layout='classes_first' or 'classes_last'")
    if r == C:
        return Bm
    if c == C:
        return Bm.T
    raise ValueError(f"feedback[{index}] {tuple(Bm.shape)} has no dimension equal to n_classes={C}")


def dfa_signals(
    logits: Tensor,
    y: Tensor,
    feedback: Sequence[Tensor],
    layout: Literal["auto", "classes_first", "classes_last"] = "auto",
) -> list[Tensor]:
    """Direct feedback alignment signals a_l = e B_l (docs/science.md §2), float64.

    logits (B, C), y (B,) labels; e = softmax(logits) − onehot(y) (B, C). feedback[l] is the
    training-time feedback matrix B_l of shape (C, d_l) (row-vector form a_l = e @ B_l) -> a_l (B, d_l).
    A (d_l, C) matrix is accepted and transposed when that reading is unambiguous (``layout='auto'``);
    a square (C, C) matrix needs ``layout``. The list index is whatever layer the caller assigns
    (typically feedback[l] for h_l, l = 0..L).

    Pitfalls 4 and 6.5: only the exact training B_l give a meaningful Γ; this function never draws
    them, and an empty list is an error, not an empty result.
    """
    if len(feedback) == 0:
        raise ValueError("dfa_signals: no feedback matrices (the training-time B_l are required)")
    e = output_error(logits, y)
    C = e.shape[1]
    return [e @ _as_classes_first(Bm, C, layout, i).detach().to(device=e.device, dtype=F64)
            for i, Bm in enumerate(feedback)]


def fa_signals(top: Tensor, feedback: Sequence[Tensor]) -> list[Tensor]:
    """Feedback alignment signals on a stack of layers: a_L = top, a_l = B_l a_{l+1} (docs/science.md §2).

    top: (B, d_L) the signal at the top of the stack (e.g. the true gradient at h_L, or e @ B_top
    from :func:`dfa_signals`). feedback = [B_0, ..., B_{L-1}], B_l of shape (d_l, d_{l+1}): it plays
    the role of the transposed Jacobian (dh_{l+1}/dh_l)ᵀ that BP would use, so with
    B_l = (dh_{l+1}/dh_l)ᵀ this is exactly BP. Per sample a_l = B_l a_{l+1}; on the batch (rows are
    samples) a_l = a_{l+1} @ B_lᵀ. Returns [a_0, ..., a_L], each (B, d_l), float64.
    """
    if top.dim() != 2:
        raise ValueError(f"fa_signals: top must be (B, d_L), got {tuple(top.shape)}")
    signals = [top.detach().to(F64)]
    for l in range(len(feedback) - 1, -1, -1):
        Bm = feedback[l]
        upper = signals[0]
        if Bm.dim() != 2 or Bm.shape[1] != upper.shape[1]:
            raise ValueError(f"fa_signals: feedback[{l}] {tuple(Bm.shape)} must be "
                             f"(d_{l}, d_{l + 1}={upper.shape[1]})")
        signals.insert(0, upper @ Bm.detach().to(device=upper.device, dtype=F64).T)
    return signals


# --------------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------------


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(float(v))


def layer_means(values: Sequence[float | None]) -> dict:
    """Headline aggregates of a per-layer metric, stated with how they were made (pitfalls 5, 6).

    values[l] is the per-layer batch mean for layer l = 0..L (None / NaN / Inf = undefined).
      all_layers  mean of the defined values over l = 0..L
      deep_only   mean of the defined values over l >= 1 (layer 0 often dominates: Γ_0 ≈ 0.43 on
                  ResMLP while deep layers ≈ 0)
      n_skipped_all / n_skipped_deep  how many undefined entries were left out (never silently)
      per_layer   the values themselves, as given (always show them)
      aggregation "mean over layers of per-layer batch means"
    A mean with nothing defined is NaN.
    """
    vals = list(values)
    used_all = [float(v) for v in vals if _finite(v)]
    used_deep = [float(v) for v in vals[1:] if _finite(v)]
    return {
        "all_layers": sum(used_all) / len(used_all) if used_all else math.nan,
        "deep_only": sum(used_deep) / len(used_deep) if used_deep else math.nan,
        "n_layers": len(vals),
        "n_skipped_all": len(vals) - len(used_all),
        "n_skipped_deep": max(len(vals) - 1, 0) - len(used_deep),
        "per_layer": [None if v is None else float(v) for v in vals],
        "aggregation": "mean over layers of per-layer batch means",
    }
