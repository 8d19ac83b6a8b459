"""Edge inference for graph-structured networks (docs/science.md §3).

Pure tensor math: every function takes tensors (or numpy arrays), returns tensors or plain dicts, and
never prints, reads files or exits. Bad input raises ``ValueError`` with a one-line message; the CLI turns
it into exit code 2.

Pipeline (docs/science.md §3, items 1-6)::

    acts, grads, loss = capture_block_signals(model, x, y)          # (L, B, C) each      (item 1)
    a = reduce_channels(acts, model.channel_groups, n_nodes)         # (L, B, N)           (item 2)
    g = reduce_channels(grads, model.channel_groups, n_nodes)
    A, G = pair_observations(a, g)                                   # (M, N) each         (item 3)
    W = edge_evidence(A, G, method="spearman")                       # (N, N)              (item 4)
    W = apply_known_edge_penalty(scale_by_act_mean(W, A), edge_index, alpha)             (item 5)
    mrr(W, truth_edges)                                              # dict                (item 6)

Memory model of :func:`edge_evidence` (inputs A, G of M x N float32, 4 bytes each):

- the two inputs are read, never modified or copied whole;
- each is standardised column block by column block (``_BLOCK_ELEMS // M`` columns at a time) into one
  (N, M) matrix of ``dtype``: 2 x M x N x 4 bytes in all, i.e. the size of the inputs;
- a column block (2^22 entries) needs ≈ 2^22 x 12 bytes for its sort (values + int64 indices) and
  2^22 x 4 bytes of int32 group-start flags (overwritten in place by the group labels; the labelled
  values reuse the sorted-values buffer), ~67 MB, whatever N and M; with many ties, per-group arrays
  add ≤ 28 bytes per group of equal values (≤ 2^22 x 15/16 groups), at most ~110 MB more;
- the output W is N x N; with ``row_chunk`` the product is formed row block by row block, so the GEMM
  needs at most row_chunk x (N + M) x 4 bytes of workspace.

Layout: ``signals`` (items 1-3: capture, per-node reduction, pairing), ``ranks`` (the column standardiser
behind item 4), ``evidence`` (items 4-6: W, its options, MRR), ``out_of_core`` (item 4 from a disk spool),
``_checks`` (input validation shared by all). Every public name is importable from this package.
"""

from __future__ import annotations

from ._checks import AGGS, METHODS, NORMS
from .evidence import apply_known_edge_penalty, bootstrap_evidence, edge_evidence, mrr, scale_by_act_mean
from .out_of_core import ObservationSpool, in_memory_bytes, parse_memory
from .signals import capture_block_signals, pair_observations, reduce_channels

__all__ = [
    "reduce_channels",
    "pair_observations",
    "edge_evidence",
    "scale_by_act_mean",
    "apply_known_edge_penalty",
    "bootstrap_evidence",
    "mrr",
    "capture_block_signals",
    "ObservationSpool",
    "in_memory_bytes",
    "parse_memory",
    "NORMS",
    "AGGS",
    "METHODS",
]
