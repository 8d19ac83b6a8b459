"""The toy linear-quadratic system (docs/science.md §2, last row): exact costates to check a credit signal
against. ``fadiag credit --toy-lq`` runs :func:`run_toy_lq`: BP must give cos ≈ 1 at every layer, DFA ≈ 0.
Float64, CPU, seeded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .credit import F64, per_sample_cosine


def _batch_mean_cosine(a: Tensor, g: Tensor) -> float:
    cos = per_sample_cosine(a, g)
    defined = cos[~torch.isnan(cos)]
    return float(defined.mean()) if defined.numel() else math.nan


@dataclass(frozen=True)
class ToyLQ:
    """A linear residual stack with a quadratic terminal loss (float64).

    Ws: [W_0..W_{L-1}], each (d, d); forward h_{l+1} = h_l + W_l h_l (row form h @ (I + W_l)ᵀ).
    Q: (d, d) symmetric positive semi-definite; t: (d,) target.
    Terminal loss per sample ℓ = ½ (h_L − t)ᵀ Q (h_L − t).
    """

    Ws: tuple[Tensor, ...]
    Q: Tensor
    t: Tensor

    @property
    def d(self) -> int:
        return int(self.t.shape[0])

    @property
    def L(self) -> int:
        return len(self.Ws)


def lq_make(d: int, L: int, seed: int, scale: float = 0.1) -> ToyLQ:
    """Draw a toy LQ system: W_l ~ N(0, scale/d) entrywise (a small residual map: h + W h stays near
    norm-preserving), Q = A Aᵀ / d with A ~ N(0, 1) (PSD), t ~ N(0, 1). Seeded, float64, CPU."""
    gen = torch.Generator().manual_seed(seed)
    Ws = tuple(torch.randn(d, d, generator=gen, dtype=F64) * math.sqrt(scale / d) for _ in range(L))
    A = torch.randn(d, d, generator=gen, dtype=F64)
    Q = A @ A.T / d
    t = torch.randn(d, generator=gen, dtype=F64)
    return ToyLQ(Ws=Ws, Q=Q, t=t)


def lq_forward(Ws: Sequence[Tensor], h0: Tensor) -> list[Tensor]:
    """[h_0..h_L] for h_{l+1} = h_l + W_l h_l; h0 (B, d) -> each (B, d). Differentiable."""
    hs = [h0]
    for W in Ws:
        hs.append(hs[-1] + hs[-1] @ W.T)
    return hs


def lq_loss(h_L: Tensor, Q: Tensor, t: Tensor) -> Tensor:
    """Per-sample terminal loss ℓ_b = ½ (h_L,b − t)ᵀ Q (h_L,b − t); h_L (B, d) -> (B,)."""
    r = h_L - t
    return 0.5 * ((r @ Q) * r).sum(dim=-1)


def lq_costates(Ws: Sequence[Tensor], h_L: Tensor, Q: Tensor, t: Tensor) -> list[Tensor]:
    """Exact costates [λ_0..λ_L] of the toy LQ system, each (B, d) float64.

        λ_L = ½ (Q + Qᵀ)(h_L − t)   (= Q (h_L − t) for the symmetric Q of lq_make) = dℓ/dh_L
        λ_l = (I + W_l)ᵀ λ_{l+1}     = (dh_{l+1}/dh_l)ᵀ λ_{l+1};  row form λ_l = λ_{l+1} @ (I + W_l)
    λ_l is the per-sample gradient dℓ/dh_l, i.e. what BP delivers to layer l.
    """
    Q64 = Q.detach().to(F64)
    r = h_L.detach().to(F64) - t.detach().to(F64)
    lam = [r @ (0.5 * (Q64 + Q64.T))]
    for W in reversed(Ws):
        W64 = W.detach().to(F64)
        lam.insert(0, lam[0] + lam[0] @ W64)
    return lam


def lq_costate_cosine(signals: Sequence[Tensor], costates: Sequence[Tensor]) -> list[float]:
    """Per layer l: mean over the batch of cos(a_l,b, λ_l,b) (NaN rows excluded; all NaN -> NaN)."""
    if len(signals) != len(costates):
        raise ValueError(f"{len(signals)} signals for {len(costates)} costates")
    return [_batch_mean_cosine(a, lam) for a, lam in zip(signals, costates)]


def lq_dfa_signals(e: Tensor, Bs: Sequence[Tensor]) -> list[Tensor]:
    """DFA on the toy: a_l = e @ B_l with e = h_L − t (B, d) the terminal error and B_l (d, d) fixed
    random matrices; returns one (B, d) float64 signal per B_l."""
    e64 = e.detach().to(F64)
    return [e64 @ Bm.detach().to(F64) for Bm in Bs]


def run_toy_lq(d: int = 16, L: int = 6, B: int = 64, seed: int = 0) -> dict:
    """Costate cosine on a seeded toy LQ system, for BP (autograd) and for DFA (random fixed B_l).

    BP signals are autograd gradients of Σ_b ℓ_b w.r.t. each h_l (independent of the costate
    recursion), so bp ≈ 1 at every layer checks the recursion; DFA signals e @ B_l with
    B_l ~ N(0, 1/d) are unrelated to λ_l, so dfa ≈ 0 (published toy value 0.001).
    Returns {"bp": [cos_0..cos_L], "dfa": [cos_0..cos_L]}.
    """
    sys_ = lq_make(d, L, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    h0 = torch.randn(B, d, generator=gen, dtype=F64)
    Bs = [torch.randn(d, d, generator=gen, dtype=F64) / math.sqrt(d) for _ in range(L + 1)]
    with torch.enable_grad():
        h0 = h0.requires_grad_(True)
        hs = lq_forward(sys_.Ws, h0)
        loss = lq_loss(hs[-1], sys_.Q, sys_.t).sum()
        bp = list(torch.autograd.grad(loss, hs))
    costates = lq_costates(sys_.Ws, hs[-1], sys_.Q, sys_.t)
    dfa = lq_dfa_signals(hs[-1].detach() - sys_.t, Bs)
    return {"bp": lq_costate_cosine(bp, costates), "dfa": lq_costate_cosine(dfa, costates)}
