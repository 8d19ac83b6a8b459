"""The audit family's report, schema "fadiag.audit/1" (docs/json.md): a superset of the reference protocol's
report dict, same names and meanings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Report, register

AUDIT_SCHEMA = "fadiag.audit/1"

#: Keys of the audit JSON object, in order. Tests hold the renderers to this list.
AUDIT_KEYS = (
    "schema", "fadiag_version", "method_name", "notes", "residual_norms", "bp_grad_norms",
    "stability_layer", "cross_batch_stability", "headline_acc", "frozen_baseline_acc", "verdict",
    "thresholds", "flags", "checkpoint", "data", "growth", "growth_mode", "headline_acc_source",
    "frozen_baseline_source", "weight_dtypes", "nonfinite_count", "spec", "block_update_norms", "median",
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
