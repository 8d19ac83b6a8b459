"""The compare family's report, schema "fadiag.compare/2" (docs/json.md).

A saved "fadiag.compare/1" report is refused with a pointer, not upgraded: its rows were computed from the
reports it compared in the /1 layout (hand-picked audit rows, the /1 flag ids), and a compare report does not
hold those reports, so it cannot be rebuilt; relabelling it /2 would describe rows it does not have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import InputError
from ...reports.base import Report, register


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

    @classmethod
    def upgrade(cls, d: dict) -> dict:
        raise InputError("a fadiag.compare/1 report cannot be re-read as /2: its rows follow the /1 layout; run "
                         "fadiag compare again on the reports it compared (docs/json.md)")
