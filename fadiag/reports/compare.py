"""The compare family's report, schema "fadiag.compare/2" (docs/json.md; /1 is read and upgraded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Report, register


@register
@dataclass(frozen=True, kw_only=True)
class CompareReport(Report):
    SCHEMA = "fadiag.compare/2"
    READS = ("fadiag.compare/1",)
    KEYS = ("schema", "fadiag_version", "compared_schema", "labels", "rows", "regressions", "baseline", "flags",
            "verdict")

    compared_schema: str
    labels: list
    rows: list
    regressions: list
    baseline: Any = None
