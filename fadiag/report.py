"""Report dataclasses and their JSON form. The JSON schema lives here.

``AuditReport.to_dict()`` is a superset of the reference protocol's report dict (same names, same
meanings), with schema "fadiag.audit/1". Non-finite floats become null (and always carry a flag).
A change that removes or renames a key bumps the schema number.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

AUDIT_SCHEMA = "fadiag.audit/1"

#: Keys of the audit JSON object, in order. Tests hold the renderers to this list.
AUDIT_KEYS = (
    "schema", "fadiag_version", "method_name", "notes", "residual_norms", "bp_grad_norms",
    "stability_layer", "cross_batch_stability", "headline_acc", "frozen_baseline_acc", "verdict",
    "thresholds", "flags", "checkpoint", "data", "growth", "growth_mode", "headline_acc_source",
    "frozen_baseline_source", "weight_dtypes", "nonfinite_count", "spec", "block_update_norms", "median",
)


from .reports.base import Flag, clean  # noqa: E402  (one Flag class for every family)


@dataclass(frozen=True)
class AuditReport:
    method_name: str
    notes: str
    residual_norms: list
    """median over the first eval batch of ||h_l||, l = 0..L (docs/science.md §1 (a))."""
    bp_grad_norms: list
    """median over the first eval batch of ||d(mean CE)/dh_l||, l = 0..L ((b))."""
    block_update_norms: list
    """median over the first eval batch of ||h_{l+1} - h_l||, l = 0..L-1 (fadiag's (f): dead blocks)."""
    stability_layer: int
    cross_batch_stability: float
    """mean pairwise dot of unit batch-mean gradients at stability_layer over disjoint batches ((c))."""
    headline_acc: float
    frozen_baseline_acc: float | None
    verdict: str
    thresholds: dict
    flags: list
    checkpoint: dict
    data: dict
    growth: float
    """(a)'s statistic under growth_mode."""
    growth_mode: str
    headline_acc_source: str
    """"computed" (on the eval batches) or "given"."""
    frozen_baseline_source: str | None
    """"given", "spec", "trained: <recipe>" or None."""
    weight_dtypes: list
    nonfinite_count: int
    spec: str
    fadiag_version: str = ""
    schema: str = AUDIT_SCHEMA
    median: str = "lower"
    """Median convention of the per-layer numbers: "lower" (torch.median, the reference's) or "midpoint"."""

    @property
    def flagged(self) -> bool:
        return any(f.flagged for f in self.flags)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in AUDIT_KEYS}
        d["flags"] = [dataclasses.asdict(f) for f in self.flags]
        return clean(d)
