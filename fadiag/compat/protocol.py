"""The reference protocol's Python API, computed by fadiag: a script changes only its import.

    from fadiag.compat.protocol import (residual_norms, bp_grad_norms, cross_batch_direction_stability,
                                        DiagnosticThresholds, DiagnosticReport)

The model honours the reference contract ``model(x, return_hidden=True) -> (logits, [h_0..h_L])``; token
models (B, T, d) use the class token. Per-layer numbers are the reference's: median over the batch of the
per-sample L2 norm with ``torch.median``'s LOWER median (``median="midpoint"`` for the textbook one), in
eval mode, g_l = d(mean CE)/dh_l. They agree with the reference code to float32 rounding (tests/
test_upstream_protocol.py). What differs on purpose (docs/upstream.md): reductions run in float64; a
non-finite number flags instead of passing; ||h_0|| = 0 flags; the model's train/eval mode of every
submodule is restored; parameter ``.grad`` buffers are never touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..diagnostics import protocol as P
from ..diagnostics.audit_quantities import in_id_order
from ..reports.base import clean, verdict_of

__all__ = ["residual_norms", "bp_grad_norms", "cross_batch_direction_stability", "DiagnosticThresholds",
           "DiagnosticReport"]


def residual_norms(model, x, median: str = P.DEFAULT_MEDIAN) -> list:
    """[median_b ||h_l||] for l = 0..L on batch ``x``, eval mode (diagnostic (a)). The hidden states are those
    of the one residual-stream pass (fadiag.stream); the labels it needs for its backward do not touch them."""
    import torch

    from ..stream import stream_pass

    y = torch.zeros(x.shape[0], dtype=torch.long)
    return P.norms_per_layer(stream_pass(model, x, y, _device(model, x)).hiddens, median)


def bp_grad_norms(model, x, y, median: str = P.DEFAULT_MEDIAN) -> list:
    """[median_b ||g_l||] for l = 0..L, g_l = d(mean CE)/dh_l on batch (x, y), eval mode (diagnostic (b))."""
    from ..stream import stream_pass

    return P.norms_per_layer(stream_pass(model, x, y, _device(model, x)).grads, median)


def cross_batch_direction_stability(model, batches, layer: int | None = None) -> float:
    """Mean pairwise dot of the unit batch-mean gradients g_{l*} over disjoint ``batches`` of (x, y) (diagnostic
    (c)); ``layer`` l* defaults to max(1, (L+1)//2). Needs at least 2 batches (ValueError otherwise)."""
    from ..stream import stream_pass

    dirs = []
    for x, y in batches:
        sp = stream_pass(model, x, y, _device(model, x))
        l_star = P.default_stability_layer(len(sp.grads)) if layer is None else layer
        if not -len(sp.grads) <= l_star < len(sp.grads):
            raise ValueError(f"layer {l_star} out of range 0..{len(sp.grads) - 1}")
        dirs.append(P.batch_mean_direction(sp.grads[l_star]))
    return P.cross_batch_stability(dirs)


def _device(model, x) -> str:
    try:
        return str(next(model.parameters()).device)
    except StopIteration:
        return str(x.device)


#: The reference protocol's diagnostics (fadiag's (e) and (f) need the pass itself, not a report's numbers).
REFERENCE_IDS = ("a", "b", "c", "d")


@dataclass
class DiagnosticThresholds:
    """The protocol's four thresholds, with the reference's defaults."""

    g_norm_floor: float = P.DEFAULT_THRESHOLDS["g_norm_floor"]
    h_norm_explosion_ratio: float = P.DEFAULT_THRESHOLDS["h_norm_explosion_ratio"]
    stability_drift_ceiling: float = P.DEFAULT_THRESHOLDS["stability_drift_ceiling"]
    frozen_acc_margin_pp: float = P.DEFAULT_THRESHOLDS["frozen_acc_margin_pp"]


@dataclass
class DiagnosticReport:
    """The reference report: numbers in, flags and verdict out; ``to_dict()`` has the reference's keys.

    Flags follow fadiag's rules (a NaN/Inf or ||h_0|| = 0 flags, never passes; (d) is skipped, not failed,
    without a baseline); the verdict string is the reference's: "trustworthy" or "needs walk-back: " + names.
    """

    method_name: str
    residual_norms: list
    bp_grad_norms: list
    stability_layer: int
    cross_batch_stability: float
    headline_acc: float
    frozen_baseline_acc: float | None = None
    notes: str = ""
    thresholds: DiagnosticThresholds = field(default_factory=DiagnosticThresholds)
    growth_mode: str = "ratio_to_h0"

    @property
    def flags(self) -> list:
        """(a)-(d) by fadiag's declared quantities' flag rules (fadiag.diagnostics.audit_quantities), from the
        numbers this report holds."""
        growth, layer = P.growth_ratio([float(v) for v in self.residual_norms], self.growth_mode)
        seen = {"growth": growth, "growth_layer": layer, "growth_mode": self.growth_mode,
                "bp_grad_norms": list(self.bp_grad_norms), "cross_batch_stability": self.cross_batch_stability,
                "headline_acc": self.headline_acc, "frozen_baseline_acc": self.frozen_baseline_acc}
        th = asdict(self.thresholds)
        return [q.flag(seen, th) for q in in_id_order() if q.id in REFERENCE_IDS]

    @property
    def verdict(self) -> str:
        return verdict_of(self.flags)

    @property
    def flagged(self) -> bool:
        return any(f.flagged for f in self.flags)

    def to_dict(self) -> dict:
        flags = self.flags
        return clean({
            "method_name": self.method_name, "notes": self.notes, "residual_norms": list(self.residual_norms),
            "bp_grad_norms": list(self.bp_grad_norms), "stability_layer": self.stability_layer,
            "cross_batch_stability": self.cross_batch_stability, "headline_acc": self.headline_acc,
            "frozen_baseline_acc": self.frozen_baseline_acc, "verdict": verdict_of(flags),
            "thresholds": asdict(self.thresholds),
            "flags": [{"id": f.id, "name": f.name, "flagged": f.flagged, "value": f.value,
                       "threshold": f.threshold} for f in flags],
        })
