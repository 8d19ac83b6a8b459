"""The audit family's report, schema "fadiag.audit/1" (docs/json.md): a superset of the reference protocol's
report dict, same names and meanings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...reports.base import Report, register

AUDIT_SCHEMA = "fadiag.audit/1"


def _null(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

#: Keys of the audit JSON object, in order. Tests hold the renderers to this list.
AUDIT_KEYS = (
    "schema", "fadiag_version", "method_name", "notes", "residual_norms", "bp_grad_norms",
    "stability_layer", "cross_batch_stability", "headline_acc", "frozen_baseline_acc", "verdict",
    "thresholds", "flags", "checkpoint", "data", "growth", "growth_mode", "headline_acc_source",
    "frozen_baseline_source", "weight_dtypes", "nonfinite_count", "spec", "block_update_norms", "median",
    "growth_statistic", "token_norms", "calibration",
)


@register
@dataclass(frozen=True, kw_only=True)
class AuditReport(Report):
    SCHEMA = AUDIT_SCHEMA
    KEYS = AUDIT_KEYS

    method_name: str
    notes: str
    residual_norms: list
    """median over the first eval batch of ||h_l||, l = 0..L (docs/science.md §1 (a))."""
    bp_grad_norms: list
    """median over the first eval batch of ||d(mean CE)/dh_l||, l = 0..L ((b))."""
    block_update_norms: list
    """median over the first eval batch of ||h_{l+1} - h_l||, l = 0..L-1 (fadiag's (f): dead blocks)."""
    stability_layer: int
    cross_batch_stability: Any
    """mean pairwise dot of unit batch-mean gradients at stability_layer over disjoint batches ((c))."""
    headline_acc: Any
    frozen_baseline_acc: Any
    thresholds: dict
    growth: Any
    """(a)'s statistic under growth_mode."""
    growth_mode: str
    headline_acc_source: str
    """"computed" (on the eval batches) or "given"."""
    frozen_baseline_source: Any
    """"given", "spec", "trained: <recipe>" or None."""
    weight_dtypes: list
    nonfinite_count: int
    median: str = "lower"
    """Median convention of the per-layer numbers: "lower" (torch.median, the reference's) or "midpoint"."""
    growth_statistic: str = "pooled"
    """What (a)'s growth reads: "pooled" (residual_norms) or "per_token" (token_norms; docs/science.md §1 (a))."""
    token_norms: Any = None
    """Token models: median over the first eval batch of each sample's mean per-token norm ||h_l[b, t]||,
    l = 0..L; None otherwise."""
    calibration: Any = None
    """The calibration the thresholds came from: name, origin, out_of_calibration, and the model's family and
    batch layout it was judged on (fadiag.calibration). None in reports older than the key."""

    # ---- judgements the renderers show (computed here, from the report's own numbers and thresholds)

    @property
    def n_layers(self) -> int:
        """Rows of the per-layer view: l = 0..L over ‖h_l‖ and ‖g_l‖ (a shorter list reads as null)."""
        return max(len(self.residual_norms or []), len(self.bp_grad_norms or []))

    def _layer_value(self, series: list, i: int):
        return series[i] if i < len(series or []) else None

    @property
    def nonfinite_h_layers(self) -> list:
        """Layers whose ‖h_l‖ is null or non-finite (never a pass: DESIGN.md)."""
        return [i for i in range(self.n_layers) if _null(self._layer_value(self.residual_norms, i))]

    @property
    def nonfinite_g_layers(self) -> list:
        """Layers whose ‖g_l‖ is null or non-finite."""
        return [i for i in range(self.n_layers) if _null(self._layer_value(self.bp_grad_norms, i))]

    @property
    def low_g_layers(self) -> list:
        """Layers whose finite ‖g_l‖ is below the report's own (b) floor (thresholds.g_norm_floor): a Γ_l there
        is uninterpretable (docs/science.md §2, pitfall 2)."""
        floor = (self.thresholds or {}).get("g_norm_floor")
        if not _finite(floor):
            return []
        return [i for i, v in enumerate(self.bp_grad_norms or []) if _finite(v) and v < floor]

    @property
    def has_fp16_weights(self) -> bool:
        """float16 (not bfloat16) weights: BP gradients near 5e-10 underflow (pitfall 3)."""
        return any(str(t).endswith("float16") and not str(t).endswith("bfloat16") for t in self.weight_dtypes or [])

    @property
    def h_norm_ceiling(self):
        """The ‖h_l‖ above which (a) flags (h_norm_explosion_ratio × ‖h_0‖) when (a) reads the ratio to h_0 of
        residual_norms; None otherwise (per_block, or per-token norms on a token model)."""
        ratio = (self.thresholds or {}).get("h_norm_explosion_ratio")
        h = self.residual_norms or []
        if self.growth_mode != "ratio_to_h0" or self.growth_statistic != "pooled" or not h or not (
                _finite(h[0]) and _finite(ratio)):
            return None
        return h[0] * ratio

    @property
    def frozen_acc_bar(self):
        """The headline accuracy (d) asks for: frozen baseline + frozen_acc_margin_pp; None without a baseline."""
        margin = (self.thresholds or {}).get("frozen_acc_margin_pp")
        if not (_finite(self.frozen_baseline_acc) and _finite(margin)):
            return None
        return self.frozen_baseline_acc + margin / 100

    def headline(self) -> list:
        """(label, value) pairs ``fadiag compare`` shows before the flags."""
        return [("method", self.method_name), ("headline acc", self.headline_acc),
                ("frozen baseline acc", self.frozen_baseline_acc)]

    def series(self) -> dict:
        """Per-layer series (JSON key -> list over l) ``fadiag compare`` shows layer by layer."""
        return {"residual_norms": list(self.residual_norms or []), "bp_grad_norms": list(self.bp_grad_norms or [])}
