"""The edges family's report, schema "fadiag.edges/2" (docs/json.md; /1 is read and upgraded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Report, register


@register
@dataclass(frozen=True, kw_only=True)
class EdgesReport(Report):
    SCHEMA = "fadiag.edges/2"
    READS = ("fadiag.edges/1",)
    KEYS = ("schema", "fadiag_version", "method_name", "n_nodes", "n_observations", "n_blocks", "params",
            "constant_columns", "scoring", "top_edges", "mean_loss", "flags", "verdict", "checkpoint", "data", "spec")

    method_name: str
    n_nodes: int
    n_observations: int
    n_blocks: Any = None
    params: Any = None
    constant_columns: Any = None
    scoring: Any = None
    top_edges: list
    mean_loss: Any = None
