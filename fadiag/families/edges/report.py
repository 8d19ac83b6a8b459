"""The edges family's report, schema "fadiag.edges/2" (docs/json.md; /1 is read and upgraded)."""

from __future__ import annotations

from dataclasses import dataclass
from ...reports.base import Report, register


@register
@dataclass(frozen=True, kw_only=True)
class EdgesReport(Report):
    """``fadiag edges``: function -> function edge evidence of a graph-structured network (docs/edges.md).
    Schema /2 changed only the verdict words; a /1 report is read as it is."""

    SCHEMA = "fadiag.edges/2"
    READS = ("fadiag.edges/1",)
    KEYS = ("schema", "fadiag_version", "method_name", "n_nodes", "n_observations", "n_blocks", "params",
            "constant_columns", "scoring", "top_edges", "mean_loss", "flags", "verdict", "checkpoint", "data", "spec")

    #: the spec's audit.method_name, else the checkpoint path
    method_name: str
    #: N, the graph's function nodes
    n_nodes: int
    #: M = (blocks - 1) x eval rows: the paired (activation, gradient) observations
    n_observations: int
    #: blocks of the model (block l's activations pair with block l+1's gradients)
    n_blocks: int | None = None
    #: the options the evidence was computed with: method, where, norm, agg, loss, row_chunk, bootstrap,
    #: samples, seed, penalty, scale_by_act_mean, ties
    params: dict | None = None
    #: {n_constant_act, n_constant_grad}: node columns whose std <= STD_FLOOR (their edges score 0)
    constant_columns: dict | None = None
    #: MRR, hits@1/3/10, random_mrr, n_queries, queries, truth; None without a truth edge list
    scoring: dict | None = None
    #: the K strongest off-diagonal edges: {rank, source, target, score, known, true}
    top_edges: list
    #: mean loss over the eval batches (the loss whose gradients were correlated)
    mean_loss: float | None = None
