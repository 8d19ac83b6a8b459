"""The relevance family's report, schema "fadiag.relevance/2" (docs/json.md; /1 is read and upgraded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Report, register


@register
@dataclass(frozen=True, kw_only=True)
class RelevanceReport(Report):
    SCHEMA = "fadiag.relevance/2"
    READS = ("fadiag.relevance/1",)
    KEYS = ("schema", "fadiag_version", "method_name", "feature_names", "head_names", "step_size_kind", "trunk",
            "per_head", "sensitivity", "truth_checks", "flags", "verdict", "checkpoint", "data", "spec")

    method_name: str
    feature_names: list
    head_names: list
    step_size_kind: Any = None
    trunk: Any = None
    per_head: Any
    sensitivity: Any = None
    truth_checks: Any = None

    def known_first(self, head: str):
        """Whether the head's known features rank first by every truth check that covers it; None without one."""
        checks = [c[head].get("ranked_first") for c in (self.truth_checks or {}).values()
                  if isinstance(c, dict) and isinstance(c.get(head), dict)]
        return None if not checks else all(checks)
