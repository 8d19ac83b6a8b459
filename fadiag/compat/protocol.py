"""The reference protocol's Python API, computed by fadiag: a script changes only its import.

    from fadiag.compat.protocol import (residual_norms, bp_grad_norms, cross_batch_direction_stability,
                                        diagnose, DiagnosticThresholds, DiagnosticReport)

Every function takes the reference's parameters in the reference's positions (``loss_fn``, ``layer_index``);
fadiag's extras (``median``, ``growth_mode``) are keyword-only. The model honours the reference contract
``model(x, return_hidden=True) -> (logits, [h_0..h_L])``; token models (B, T, d) use the class token.
Per-layer numbers are the reference's: median over the batch of the per-sample L2 norm with
``torch.median``'s LOWER median (``median="midpoint"`` for the textbook one), in eval mode, g_l = d loss_fn
(logits, y) / dh_l (default ``F.cross_entropy``, mean over the batch). They agree with the reference code to
float32 rounding (tests/families/audit/test_upstream_protocol.py). What differs on purpose (docs/upstream.md): reductions run
in float64; a non-finite number flags instead of passing; ||h_0|| = 0 flags; ``diagnose`` runs one forward +
backward per batch (the reference: 2 + K); the model's train/eval mode of every submodule is restored;
parameter ``.grad`` buffers are never touched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..diagnostics import protocol as P
from ..diagnostics.audit_quantities import DEFAULT_THRESHOLDS, in_id_order
from ..reports.base import clean, verdict_of
from ..stream.view import StreamView

__all__ = ["residual_norms", "bp_grad_norms", "cross_batch_direction_stability", "diagnose",
           "DiagnosticThresholds", "DiagnosticReport"]


class _LossFnView(StreamView):
    """fadiag's residual view with the reference's ``loss_fn(logits, y)`` (a scalar) as the loss: each sample
    carries the scalar, so d(mean)/dh_l is d loss_fn/dh_l, computed in the model's dtype as the reference."""

    loss_fn = staticmethod(F.cross_entropy)

    def loss_of(self, logits, x, y):
        loss = self.loss_fn(logits, y)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError("loss_fn(logits, y) must return a scalar tensor (a batch-mean loss)")
        return loss.to(torch.float64).reshape(1).expand(logits.shape[0])

    def _like(self, model, stream, settled: bool) -> StreamView:
        v = super()._like(model, stream, settled)
        v.__class__, v.loss_fn = _LossFnView, self.loss_fn
        return v


def _pass(model, x, y, loss_fn):
    """One forward + backward of batch (x, y): fadiag.stream's pass (mean CE in float64 for F.cross_entropy)."""
    from ..models.presets import resolve_view
    from ..stream import stream_pass

    view = resolve_view(model)
    if loss_fn is not None and loss_fn is not F.cross_entropy:
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable as loss_fn(logits, y), got {loss_fn!r}")
        view.__class__, view.loss_fn = _LossFnView, loss_fn
    return stream_pass(view, x, y, _device(model, x))


def residual_norms(model, x, *, median: str = P.DEFAULT_MEDIAN) -> list:
    """[median_b ||h_l||] for l = 0..L on batch ``x``, eval mode (diagnostic (a)). The hidden states are those
    of the one residual-stream pass (fadiag.stream); the labels it needs for its backward do not touch them."""
    y = torch.zeros(x.shape[0], dtype=torch.long)
    return P.norms_per_layer(_pass(model, x, y, None).hiddens, median)


def bp_grad_norms(model, x, y, loss_fn=F.cross_entropy, *, median: str = P.DEFAULT_MEDIAN) -> list:
    """[median_b ||g_l||] for l = 0..L, g_l = d loss_fn(logits, y) / dh_l on batch (x, y), eval mode (diagnostic
    (b)); ``loss_fn`` defaults to the mean cross-entropy."""
    return P.norms_per_layer(_pass(model, x, y, loss_fn).grads, median)


def _stability_from(passes: list, layer_index: int | None) -> tuple[int, float]:
    n = len(passes[0].grads)
    l_star = P.default_stability_layer(n) if layer_index is None else int(layer_index)
    if not -n <= l_star < n:
        raise ValueError(f"layer_index {l_star} out of range 0..{n - 1}")
    return l_star, P.cross_batch_stability([P.batch_mean_direction(sp.grads[l_star]) for sp in passes])


def cross_batch_direction_stability(model, batches, layer_index: int | None = None, loss_fn=F.cross_entropy) -> float:
    """Mean pairwise dot of the unit batch-mean gradients g_{l*} over disjoint ``batches`` of (x, y) (diagnostic
    (c)); ``layer_index`` l* defaults to max(1, (L+1)//2). Needs at least 2 batches (ValueError otherwise)."""
    batches = list(batches)
    if len(batches) < 2:
        raise ValueError("cross-batch stability needs at least 2 disjoint batches")
    return _stability_from([_pass(model, x, y, loss_fn) for x, y in batches], layer_index)[1]


def diagnose(model, batches, method_name: str, headline_acc: float, frozen_baseline_acc: float | None = None,
             layer_index: int | None = None, thresholds: "DiagnosticThresholds | None" = None, notes: str = "",
             loss_fn=F.cross_entropy, *, median: str = P.DEFAULT_MEDIAN,
             growth_mode: str = "ratio_to_h0") -> "DiagnosticReport":
    """The reference's entry point: (a) and (b) on the first of ``batches``, (c) over all of them at
    ``layer_index``, (d) from the two accuracies; returns a :class:`DiagnosticReport`. fadiag runs one forward +
    backward per batch where the reference ran 2 + K passes (same numbers)."""
    batches = list(batches)
    if len(batches) < 2:
        raise ValueError("diagnose needs at least 2 disjoint batches (cross-batch stability)")
    passes = [_pass(model, x, y, loss_fn) for x, y in batches]
    l_star, stab = _stability_from(passes, layer_index)
    return DiagnosticReport(method_name, P.norms_per_layer(passes[0].hiddens, median),
                            P.norms_per_layer(passes[0].grads, median), l_star, stab, headline_acc,
                            frozen_baseline_acc, notes, thresholds if thresholds is not None else DiagnosticThresholds(),
                            growth_mode=growth_mode)


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

    g_norm_floor: float = DEFAULT_THRESHOLDS["g_norm_floor"]
    h_norm_explosion_ratio: float = DEFAULT_THRESHOLDS["h_norm_explosion_ratio"]
    stability_drift_ceiling: float = DEFAULT_THRESHOLDS["stability_drift_ceiling"]
    frozen_acc_margin_pp: float = DEFAULT_THRESHOLDS["frozen_acc_margin_pp"]


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
    growth_mode: str = field(default="ratio_to_h0", kw_only=True)

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

    def summary(self) -> str:
        """The printout (``print(report)``): a title, the verdict, one line per diagnostic (value, threshold,
        FLAG / ok / skipped) and the notes when there are any."""
        lines = [f"=== Diagnostic report: {self.method_name} ===", f"verdict: {self.verdict}"]
        for f in self.flags:
            state = "skipped" if f.flagged is None else ("FLAG" if f.flagged else "ok")
            lines.append(f"({f.id}) {f.name}: value {_num(f.value)} (threshold {_num(f.threshold)}) -> {state}")
        if self.notes:
            lines.append(f"notes: {self.notes}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _num(v) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.4g}"
