"""The inspect family's report, schema "fadiag.inspect/2" (docs/json.md; /1 is read and upgraded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Report, register


@register
@dataclass(frozen=True, kw_only=True)
class InspectReport(Report):
    SCHEMA = "fadiag.inspect/2"
    READS = ("fadiag.inspect/1",)
    KEYS = ("schema", "fadiag_version", "checkpoint", "needs_unsafe_unpickling", "unsafe_globals", "globals",
            "tensors", "other_entries", "n_tensors", "n_elements", "tensors_not_listed", "entries_not_listed",
            "visits", "state_dict_key", "embedded_spec", "archive_anomalies", "flags", "verdict")

    needs_unsafe_unpickling: bool
    unsafe_globals: Any = None
    globals: Any = None
    tensors: Any = None
    other_entries: Any = None
    n_tensors: Any = None
    n_elements: Any = None
    tensors_not_listed: Any = None
    entries_not_listed: Any = None
    visits: Any = None
    state_dict_key: Any = None
    embedded_spec: Any = None
    archive_anomalies: Any = None
