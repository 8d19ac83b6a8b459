"""The trajectory family's report, schema "fadiag.trajectory/1" (docs/json.md, docs/trajectory.md): one audit
per step of a training run, in step order, and per audit flag the first step where it fires and the layer where
it started (``first_flagged``, docs/science.md §8).

A step's record (``points[i]``) is what ``fadiag.callbacks`` writes as one JSONL line during training, so that
a run's callback log and ``fadiag trajectory`` over its checkpoints are compared record by record.
torch-free: the CLI and the renderers use it at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...reports.base import Report, register

TRAJECTORY_SCHEMA = "fadiag.trajectory/1"
#: the schema of one step's record (a callback's JSONL line; an entry of ``points``)
POINT_SCHEMA = "fadiag.trajectory.point/1"

TRAJECTORY_KEYS = ("schema", "fadiag_version", "method_name", "verdict", "steps", "points", "first_flagged",
                   "thresholds", "flags", "data", "spec")

#: the audit report's per-step numbers a record keeps (the names of fadiag.audit/1)
POINT_SERIES = ("residual_norms", "bp_grad_norms", "block_update_norms")
POINT_SCALARS = ("growth", "growth_mode", "stability_layer", "cross_batch_stability", "headline_acc",
                 "frozen_baseline_acc", "nonfinite_count")


@register
@dataclass(frozen=True, kw_only=True)
class TrajectoryReport(Report):
    SCHEMA = TRAJECTORY_SCHEMA
    KEYS = TRAJECTORY_KEYS

    method_name: str
    steps: list
    """the step of each record, ascending (one record per step)."""
    points: list
    """one record per step (fadiag.trajectory.point/1): step, step_source, checkpoint, the audit's per-layer
    series and scalars, its flags and verdict."""
    first_flagged: dict
    """audit flag id -> {step, layer, layers, name, value, threshold, checkpoint} at the first step where the flag
    fires, or null when it never fires (docs/science.md §8)."""
    thresholds: dict

    @property
    def n_layers(self) -> int:
        return max((len(p.get("residual_norms") or []) for p in self.points), default=0)

    def series(self) -> dict:
        """The last step's per-layer series (what ``fadiag compare`` shows)."""
        last = self.points[-1] if self.points else {}
        return {k: list(last.get(k) or []) for k in ("residual_norms", "bp_grad_norms")}

    def headline(self) -> list:
        return [("method", self.method_name), ("steps", f"{self.steps[0]}..{self.steps[-1]}" if self.steps else "")]

    @property
    def step_sources(self) -> list:
        """Where the steps came from (``step_source`` of the records), each once, in step order."""
        return list(dict.fromkeys(str(p.get("step_source")) for p in self.points))

    def past_cells(self, fid: str) -> list:
        """(step index, layer) cells past flag ``fid``'s per-layer criterion (docs/science.md §8)."""
        from .first import layers_past

        return [(i, l) for i, p in enumerate(self.points) for l in layers_past(fid, p, self.thresholds) or []]

    def grid(self, key: str) -> list:
        """steps x layers of a per-layer series (None where a record has no value)."""
        n = self.n_layers
        return [[(p.get(key) or [])[l] if l < len(p.get(key) or []) else None for l in range(n)] for p in self.points]


def point_from_audit(audit: dict, step: int, step_source: str) -> dict:
    """One step's record from an audit report dict (fadiag.audit/1): its numbers as they are, not recomputed."""
    ck = audit.get("checkpoint") if isinstance(audit.get("checkpoint"), dict) else None
    out: dict[str, Any] = {"schema": POINT_SCHEMA, "step": step, "step_source": step_source,
                           "checkpoint": {k: ck.get(k) for k in ("path", "sha256", "format")} if ck else None}
    out.update({k: audit.get(k) for k in POINT_SERIES + POINT_SCALARS})
    out["flags"] = [{k: f.get(k) for k in ("id", "name", "flagged", "value", "threshold")}
                    for f in audit.get("flags") or []]
    out["verdict"] = audit.get("verdict")
    return out

