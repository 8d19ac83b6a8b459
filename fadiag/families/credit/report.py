"""The credit family's report, schema "fadiag.credit/2" (docs/json.md; /1 is read and upgraded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...reports.base import Report, register


@register
@dataclass(frozen=True, kw_only=True)
class CreditReport(Report):
    SCHEMA = "fadiag.credit/2"
    READS = ("fadiag.credit/1",)
    KEYS = ("schema", "fadiag_version", "method_name", "signal", "signal_source", "layers", "means",
            "drift_per_tensor", "not_available", "params", "thresholds", "flags", "verdict", "checkpoint", "data",
            "spec", "stream")

    method_name: str
    signal: str
    signal_source: Any
    layers: list
    means: dict
    drift_per_tensor: Any = None
    not_available: Any = None
    params: Any = None
    thresholds: Any = None
    stream: Any = None
    """The residual-stream description; None (and no "stream" key) for the toy LQ report, which has no model."""

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.stream is None and "stream" not in self.extra:
            d.pop("stream", None)
        return d

    @classmethod
    def upgrade(cls, d: dict) -> dict:
        """/1 -> /2: the non-finite flag's id "nonfinite" is now "e" (audit's id for the same check)."""
        flags = d.get("flags")
        if isinstance(flags, list):
            d["flags"] = [{**f, "id": "e"} if isinstance(f, dict) and f.get("id") == "nonfinite" else f
                          for f in flags]
        return d
