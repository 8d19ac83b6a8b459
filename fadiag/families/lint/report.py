"""The lint family's report, schema "fadiag.lint/2" (docs/json.md; /1 is read and upgraded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...reports.base import Report, register


@register
@dataclass(frozen=True, kw_only=True)
class LintReport(Report):
    SCHEMA = "fadiag.lint/2"
    READS = ("fadiag.lint/1",)
    KEYS = ("schema", "fadiag_version", "paths", "n_files", "rules", "findings", "flags", "verdict")

    paths: list
    n_files: int
    rules: Any = None
    findings: list
