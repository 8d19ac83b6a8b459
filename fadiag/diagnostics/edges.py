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
"""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np
import torch

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

NORMS = ("l1", "l2", "none")
AGGS = ("sum", "mean", "max")
METHODS = ("spearman", "pearson")

#: a column with a standard deviation at or below this scores 0 (docs/science.md §3 item 4)
CONSTANT_STD = 1e-12

# Entries standardised per column block (block = _BLOCK_ELEMS // M columns): bounds the transient
# memory of the sort (values + int64 indices) and tie bookkeeping to a few tens of MB, while each
# sort call stays big enough to run in parallel.
_BLOCK_ELEMS = 1 << 22
_NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


# ----------------------------------------------------------------------------------------------------
# input validation


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name}: cannot be read as a tensor ({err})") from None


def _check_finite(x: torch.Tensor, name: str) -> None:
    """Raise if x holds NaN or Inf; a single sum() keeps the common (finite) case allocation-free."""
    if not x.is_floating_point():
        return
    # x.sum() allocates nothing; if it overflows to Inf the exact count below decides.
    if torch.isfinite(x.sum()):
        return
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(torch.isinf(x).sum())
    if n_nan or n_inf:
        raise ValueError(
            f"{name} has {n_nan} NaN and {n_inf} Inf values out of {x.numel()}; "
            "ranks and correlations of non-finite values are meaningless"
        )


def _obs_pair(acts, grads) -> tuple[torch.Tensor, torch.Tensor]:
    A = _as_tensor(acts, "acts")
    G = _as_tensor(grads, "grads")
    if A.dim() != 2 or G.dim() != 2:
        raise ValueError(
            f"acts and grads must be 2-D (M, N) matrices, got shapes {tuple(A.shape)} and {tuple(G.shape)}"
        )
    if A.shape != G.shape:
        raise ValueError(
            f"acts and grads must have the same shape (M, N), got {tuple(A.shape)} and {tuple(G.shape)}"
        )
    if A.shape[0] < 1 or A.shape[1] < 1:
        raise ValueError(f"acts and grads need at least one row and one column, got {tuple(A.shape)}")
    if A.device != G.device:
        raise ValueError(f"acts and grads are on different devices ({A.device} and {G.device})")
    if A.is_complex() or G.is_complex():
        raise ValueError("acts and grads must be real-valued")
    if A.dtype == torch.bool or G.dtype == torch.bool:
        A, G = A.to(torch.float32), G.to(torch.float32)
    _check_finite(A, "acts")
    _check_finite(G, "grads")
    return A, G


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def _check_row_chunk(row_chunk) -> None:
    if row_chunk is None:
        return
    if isinstance(row_chunk, bool) or not isinstance(row_chunk, (int, np.integer)):
        raise ValueError(f"row_chunk must be a positive integer or None, got {row_chunk!r}")
    if row_chunk <= 0:
        raise ValueError(f"row_chunk must be a positive integer or None, got {row_chunk}")


def _edge_tensor(edges, n_nodes: int, name: str) -> torch.Tensor:
    """(2, E) LongTensor of (src, dst) from a (2, E) tensor/array or a list of (src, dst) pairs."""
    if isinstance(edges, (torch.Tensor, np.ndarray)):
        e = _as_tensor(edges, name)
    else:
        try:
            pairs = [tuple(int(v) for v in pair) for pair in edges]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a (2, E) tensor or a list of (src, dst) pairs") from None
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"{name} must be a list of (src, dst) pairs")
        e = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T
    if e.dim() != 2 or e.shape[0] != 2:
        raise ValueError(f"{name} must have shape (2, E) of (src, dst) rows, got {tuple(e.shape)}")
    if e.is_floating_point():
        if e.numel() and not bool((e == e.round()).all()):
            raise ValueError(f"{name} must hold integer node ids")
    elif e.dtype == torch.bool or e.is_complex():
        raise ValueError(f"{name} must hold integer node ids, got dtype {e.dtype}")
    e = e.to(torch.long)
    if e.numel() and (int(e.min()) < 0 or int(e.max()) >= n_nodes):
        raise ValueError(
            f"{name} has node ids in [{int(e.min())}, {int(e.max())}], outside [0, {n_nodes - 1}]"
        )
    return e


# ----------------------------------------------------------------------------------------------------
# items 2-3: per-node signals and observations


def reduce_channels(
    x, channel_groups, n_nodes: int, norm: str = "l2", agg: str = "sum"
) -> torch.Tensor:
    """Per-node signal from per-channel values (docs/science.md §3 item 2).

    out[l, b, n] = agg_{c : channel_groups[c] = n} t(x[l, b, c]),
    t = |x| (``l1``), x² (``l2``; squared, as the reference), x (``none``);
    agg = sum | mean | max; an empty group gives 0 for every agg.

    Args:
        x: (L, B, C) per-channel values (any leading shape works; the last dim is channels).
        channel_groups: (C,) integer node id of each channel, in [0, n_nodes).
        n_nodes: N.
    Returns:
        (L, B, N) tensor in x's dtype (float32 for integer input), on x's device.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if agg not in AGGS:
        raise ValueError(f"agg must be one of {', '.join(AGGS)}, got {agg!r}")
    x = _as_tensor(x, "x")
    if not x.is_floating_point():
        x = x.to(torch.float32)
    groups = _as_tensor(channel_groups, "channel_groups")
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, (int, np.integer)) or n_nodes < 1:
        raise ValueError(f"n_nodes must be a positive integer, got {n_nodes!r}")
    if x.dim() < 1:
        raise ValueError("x must have a channel dimension (last dim)")
    if groups.dim() != 1 or groups.shape[0] != x.shape[-1]:
        raise ValueError(
            f"channel_groups must have shape (C,) = ({x.shape[-1]},) to match x's last dim, "
            f"got {tuple(groups.shape)}"
        )
    if groups.is_floating_point() or groups.dtype == torch.bool:
        raise ValueError(f"channel_groups must be an integer tensor, got {groups.dtype}")
    groups = groups.to(device=x.device, dtype=torch.long)
    if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= n_nodes):
        raise ValueError(
            f"channel_groups has node ids in [{int(groups.min())}, {int(groups.max())}], "
            f"outside [0, {n_nodes - 1}]"
        )
    if norm == "l1":
        t = x.abs()
    elif norm == "l2":
        t = x * x
    else:
        t = x
    out = torch.zeros(*x.shape[:-1], n_nodes, dtype=t.dtype, device=x.device)
    if agg == "max":
        idx = groups.expand_as(t)
        # include_self=False: an empty group keeps the 0 it was initialised with.
        return out.scatter_reduce_(-1, idx, t, reduce="amax", include_self=False)
    out.index_add_(-1, groups, t)
    if agg == "mean":
        counts = torch.bincount(groups, minlength=n_nodes).to(t.dtype)
        out = out / counts.clamp_min(1)
    return out


def pair_observations(acts_nodes, grads_nodes) -> tuple[torch.Tensor, torch.Tensor]:
    """Observation matrices (docs/science.md §3 item 3).

    A = acts_nodes[0 .. L-2] and G = grads_nodes[1 .. L-1], each flattened to (M, N), M = (L-1)·B:
    row (l, b) of A is node activity in block l, the same row of G the gradient in block l+1.

    Args:
        acts_nodes, grads_nodes: (L, B, N), L >= 2.
    Returns:
        (A, G), each (M, N).
    """
    a = _as_tensor(acts_nodes, "acts_nodes")
    g = _as_tensor(grads_nodes, "grads_nodes")
    if a.dim() != 3 or a.shape != g.shape:
        raise ValueError(
            f"acts_nodes and grads_nodes must both be (L, B, N), got {tuple(a.shape)} and {tuple(g.shape)}"
        )
    if a.shape[0] < 2:
        raise ValueError(f"pairing layer l with l+1 needs L >= 2 layers, got L = {a.shape[0]}")
    n = a.shape[-1]
    return a[:-1].reshape(-1, n), g[1:].reshape(-1, n)


# ----------------------------------------------------------------------------------------------------
# item 4: correlation


def _tie_groups_sparse(eq: torch.Tensor):
    """Tie groups from eq (k, M-1), eq[r, j] = (sorted[r, j] == sorted[r, j+1]), in O(#tied pairs).

    Returns (row, first, last) LongTensors, one entry per group of >= 2 equal values, spanning sorted
    positions first..last of that row. Used when ties are few (continuous data).
    """
    row, j = eq.nonzero(as_tuple=True)
    if row.numel() == 0:
        return row, j, j
    # a run of consecutive tied pairs in one row is one group; nonzero() lists them in row-major order
    brk = torch.ones_like(row, dtype=torch.bool)
    brk[1:] = (row[1:] != row[:-1]) | (j[1:] != j[:-1] + 1)
    starts = brk.nonzero(as_tuple=True)[0]
    ends = torch.cat([starts[1:] - 1, starts.new_tensor([row.numel() - 1])])
    return row[starts], j[starts], j[ends] + 1


def _argsort_rows(a: np.ndarray, out: np.ndarray) -> None:
    """out[r] = np.argsort(a[r]) for each row. Rows go in chunks of ~2^20 entries (so numpy's own index
    array stays small beside ``out``), the chunks split over torch's intra-op thread count (numpy's sort
    releases the GIL, so the threads run in parallel)."""
    k, m = a.shape
    step = max(1, (1 << 20) // max(m, 1))
    chunks = [(r0, min(k, r0 + step)) for r0 in range(0, k, step)]

    def part(c):
        out[c[0]:c[1]] = np.argsort(a[c[0]:c[1]], axis=1)

    n_threads = max(1, min(torch.get_num_threads(), len(chunks)))
    if n_threads == 1:
        for c in chunks:
            part(c)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n_threads) as ex:
        list(ex.map(part, chunks))


def _standardise_into(
    x: torch.Tensor, out: torch.Tensor, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write the columns of x (M, N), centred, into out (N, M) and return their inverse norms.

    spearman: out[n] = average ranks of x[:, n] minus their mean (ties share the mean of their sorted
    positions, as scipy.stats.rankdata 'average'), left unscaled: they are exact multiples of 1/2, and
    the scale is applied to the N x N product instead of the N x M matrix. pearson: out[n] =
    (x[:, n] - mean) / ||x[:, n] - mean|| (centred in float64), scale 1, so tiny gradients cannot
    underflow in the product.

    For ranks the norm needs no pass over the data: centred ranks 0..M-1 have
    Σ (r - (M-1)/2)² = (M³ − M)/12, and averaging a tie group of size t removes (t³ − t)/12.
    Works a block of _BLOCK_ELEMS // M columns at a time (see the module docstring for memory).

    Returns:
        (scale (N,) float64: z = out[n] * scale[n] has unit norm, 0 for a constant column;
         constant-column mask (N,) bool).
    """
    m, n = x.shape
    dev = x.device
    const = torch.zeros(n, dtype=torch.bool, device=dev)
    scale = torch.ones(n, dtype=torch.float64, device=dev)
    col_block = max(1, min(n, _BLOCK_ELEMS // m))
    if method == "pearson":
        for c0 in range(0, n, col_block):
            c1 = min(n, c0 + col_block)
            b64 = x[:, c0:c1].T.to(torch.float64)
            b64 = b64 - b64.mean(dim=1, keepdim=True)
            ss = (b64 * b64).sum(dim=1)
            bad = (ss / m).sqrt() <= CONSTANT_STD
            inv = torch.where(bad, 0.0, 1.0 / ss.sqrt().clamp_min(1e-300))
            out[c0:c1].copy_(b64 * inv[:, None])
            const[c0:c1] = bad
            scale[c0:c1] = torch.where(bad, 0.0, 1.0)
        return scale, const

    centre = (m - 1) / 2.0
    ss_no_ties = (m ** 3 - m) / 12.0
    # centred positions 0..M-1, exact in float32 up to 2^23 rows
    pos = torch.arange(m, dtype=torch.float64, device=dev).sub_(centre).to(out.dtype)
    # Same dtype: one fast whole-matrix transpose into out, then sort out's rows in place of a copy.
    # Otherwise sort each block in x's own dtype, so that no rounding can create artificial ties.
    in_place = x.dtype == out.dtype
    if in_place and not (x.T.data_ptr() == out.data_ptr() and x.T.stride() == out.stride()):
        out.copy_(x.T)
    kmax = min(n, col_block)
    sv_buf = torch.empty(kmax, m, dtype=x.dtype, device=dev)
    idx_buf = torch.empty(kmax, m, dtype=torch.long, device=dev)
    # int32 group-start flags of a block; in the many-ties path the running count overwrites them
    flag_buf = torch.empty(kmax, m, dtype=torch.int32 if kmax * m < 2**31 else torch.int64, device=dev)
    # numpy >= 2 argsorts with SIMD sorting networks: 0.5-0.7x the CPU of torch.sort on continuous, ReLU +
    # quantised and 8-level data alike (docs/scale.md); older numpy and other devices use torch.sort
    numpy_sort = dev.type == "cpu" and x.dtype in (torch.float32, torch.float64) and m > 1 and _NUMPY_2
    for c0 in range(0, n, col_block):
        c1 = min(n, c0 + col_block)
        k = c1 - c0
        dst = out[c0:c1]
        src = dst if in_place else x[:, c0:c1].T.contiguous()
        if numpy_sort:
            idx = idx_buf[:k]
            _argsort_rows(src.numpy(), idx.numpy())
            sv = torch.gather(src, 1, idx, out=sv_buf[:k])
        else:
            sv, idx = torch.sort(src, dim=1, out=(sv_buf[:k], idx_buf[:k]))
        # flags[r, j] = 1 where sorted position j starts a new group of equal values (j = 0 always)
        flags = flag_buf[:k]
        flags[:, 0] = 1
        torch.ne(sv[:, 1:], sv[:, :-1], out=flags[:, 1:])
        n_groups = int(torch.count_nonzero(flags))
        n_tied = k * m - n_groups  # neighbour pairs that tie
        ss = torch.full((k,), ss_no_ties, dtype=torch.float64, device=dev)
        bad = torch.full((k,), m == 1, dtype=torch.bool, device=dev)  # one row: all constant
        if n_tied * 16 <= k * m:
            # few ties: positions 0..M-1 everywhere, then overwrite the members of each tie group
            dst.scatter_(1, idx, pos.expand(k, m))
            if n_tied:
                row, first, last = _tie_groups_sparse(flags[:, 1:] == 0)
            else:
                row = first = last = torch.empty(0, dtype=torch.long, device=dev)
            if row.numel():
                size = last - first + 1
                grp = torch.repeat_interleave(torch.arange(row.numel(), device=dev), size)
                p = torch.arange(grp.numel(), device=dev)
                p -= torch.repeat_interleave(size.cumsum(0) - size, size)
                p += first[grp]
                r = row[grp]
                mean_pos = ((first + last).to(torch.float64) * 0.5 - centre).to(out.dtype)
                dst[r, idx[r, p]] = mean_pos[grp]
        else:
            # many ties (ReLU zeros, quantised values): label every sorted entry with its group
            # (a running count of group starts over the flattened block), give each group its mean
            # position, and scatter the labelled values back in one pass
            flat = flags.view(-1)
            if n_groups * 8 < k * m:
                # few groups: binary-search each label's first entry instead of a full nonzero() pass
                gid = flat.cumsum_(0)
                labels = torch.arange(1, n_groups + 1, dtype=gid.dtype, device=dev)
                starts = torch.searchsorted(gid, labels)
            else:
                starts = flat.nonzero().squeeze(1)  # flattened position of each group's first entry
                gid = flat.cumsum_(0)
            size = torch.empty_like(starts)
            torch.sub(starts[1:], starts[:-1], out=size[:-1])
            size[-1] = k * m - starts[-1]
            # table[g] = the group's mean position in flattened coordinates, starts + (size - 1) / 2;
            # exact in float32 while k·M < 2^23 (halves), so float64 beyond that
            tdtype = out.dtype if k * m < 2**23 else torch.float64
            table = torch.empty(n_groups + 1, dtype=tdtype, device=dev)
            table[0] = 0.0  # gid counts from 1: entry 0 is a placeholder
            torch.add(starts.to(tdtype), size.to(tdtype), alpha=0.5, out=table[1:])
            # the sorted values are no longer needed: their buffer takes the labelled values
            zbuf = sv_buf[:k].view(-1) if sv_buf.dtype == tdtype else None
            z = torch.index_select(table, 0, gid, out=zbuf) if zbuf is not None else table.index_select(0, gid)
            z = z.view(k, m)
            del gid, table
            # back to centred within-row positions: subtract r·M + (M - 1)/2 from row r (and the 0.5)
            offset = torch.arange(k, device=dev, dtype=torch.float64) * m + centre + 0.5
            z -= offset.to(z.dtype)[:, None]
            dst.scatter_(1, idx, z if z.dtype == out.dtype else z.to(out.dtype))
            del z
            tied = (size > 1).nonzero().squeeze(1)
            row = starts[tied] // m
            first = starts[tied] - row * m
            last = first + size[tied] - 1
        if row.numel():
            size = last - first + 1
            t = size.to(torch.float64)
            ss.index_add_(0, row, -(t ** 3 - t) / 12.0)
            # a constant column is one group of all M rows: tested exactly, not via a rounded ss
            bad[row[size == m]] = True
        const[c0:c1] = bad
        scale[c0:c1] = torch.where(bad, 0.0, 1.0 / ss.clamp_min(1e-300).sqrt())
    return scale, const


def edge_evidence(
    acts,
    grads,
    method: str = "spearman",
    row_chunk: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    return_info: bool = False,
):
    """Edge evidence W (N, N): W[i, j] = corr over rows of (acts[:, i], grads[:, j]) (docs/science.md §3 item 4).

    spearman: Pearson correlation of the columns' average ranks (ties share the mean of their positions,
    as scipy.stats.rankdata 'average' / spearmanr; ReLU zeros then do not bias scores); pearson: plain.
    With c_x[:, i] = x[:, i] - mean (ranks first for spearman) and s_x[i] = 1 / ||c_x[:, i]||,
    W = diag(s_acts) · c_actsᵀ c_grads · diag(s_grads): the N x N act-vs-grad block only, never the
    2N x 2N matrix. A column with std <= 1e-12 (population std of its ranks / values) has s = 0, so its
    whole row / column of W is 0.

    Accuracy: centred ranks are exact in float32 (up to 2^23 rows); norms are exact or float64; the
    GEMM runs in ``dtype`` (float32 default): entries match scipy to ~1e-6.

    Args:
        acts: (M, N) node activities, M observations (rows) x N nodes; tensor or numpy array.
        grads: (M, N) node gradients, same rows.
        method: "spearman" | "pearson".
        row_chunk: None, or the number of W rows formed per GEMM (bounds the GEMM workspace to
            ≈ row_chunk·(N+M)·4 bytes beyond the standardised inputs). Chunking changes only the
            GEMM's float rounding (≤ ~1e-6 in float32).
        dtype: compute dtype of the standardised inputs and of W (float32 or float64).
        return_info: also return {"n_constant_act": int, "n_constant_grad": int}.
    Returns:
        W (N, N) of ``dtype`` on the inputs' device, or (W, info) if return_info.
    Raises:
        ValueError: non-2-D or mismatched inputs, NaN/Inf values, bad method, row_chunk or dtype.
    """
    _check_method(method)
    _check_row_chunk(row_chunk)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    A, G = _obs_pair(acts, grads)
    m, n = A.shape
    za = torch.empty(n, m, dtype=dtype, device=A.device)
    scale_a, const_a = _standardise_into(A, za, method)
    zg = torch.empty(n, m, dtype=dtype, device=A.device)
    scale_g, const_g = _standardise_into(G, zg, method)
    if row_chunk is None or row_chunk >= n:
        W = za @ zg.T
    else:
        W = torch.empty(n, n, dtype=dtype, device=A.device)
        for r0 in range(0, n, row_chunk):
            r1 = min(n, r0 + row_chunk)
            torch.mm(za[r0:r1], zg.T, out=W[r0:r1])
    del za, zg
    if method == "spearman":
        W.mul_(scale_a.to(dtype)[:, None]).mul_(scale_g.to(dtype)[None, :])
    # rounding can push |W| a hair above 1; correlations live in [-1, 1]
    W.clamp_(-1.0, 1.0)
    if return_info:
        return W, {"n_constant_act": int(const_a.sum()), "n_constant_grad": int(const_g.sum())}
    return W


# ----------------------------------------------------------------------------------------------------
# item 4, out of core: observations spooled to disk, ranks a column block at a time, W streamed over M

_GIB = 1 << 30
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000 ** 2,
          "mib": 1 << 20, "g": _GIB, "gb": 1000 ** 3, "gib": _GIB, "t": 1 << 40, "tb": 1000 ** 4,
          "tib": 1 << 40}
# bytes per (column, row) entry while a column block is ranked: the block itself (4), sorted values (4),
# int64 sort indices (8), int32 flags (4), labelled values / tie bookkeeping (<= 12)
_RANK_BYTES_PER_ENTRY = 32
# bytes of the spool read through the mapping at a time before its pages are dropped again
_READ_CHUNK = 64 << 20


def parse_memory(text) -> int:
    """'4GiB', '512M', '6e9', 1_000_000 -> bytes (K/M/G/T are binary; KB/MB/GB/TB decimal)."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        s = str(text).strip().lower().replace(" ", "")
        i = len(s)
        while i and s[i - 1].isalpha():
            i -= 1
        num, unit = s[:i], s[i:]
        try:
            value = float(num)
        except ValueError:
            raise ValueError(f"memory size must be a number with an optional unit (4GiB, 512M), got {text!r}") from None
    if unit not in _UNITS:
        raise ValueError(f"unknown memory unit {unit!r} in {text!r} (use B, K/KiB, M/MiB, G/GiB, T/TiB, KB, MB, GB, TB)")
    out = value * _UNITS[unit]
    if not math.isfinite(out) or out < 1:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return int(out)


def in_memory_bytes(m: int, n: int, dtype_bytes: int = 4) -> int:
    """Peak working memory of the in-memory path: the inputs A, G (float32), their standardised copies,
    W and its scaling temporaries, and one column block's sort (see the module docstring)."""
    return 2 * m * n * 4 + 2 * m * n * dtype_bytes + 2 * n * n * dtype_bytes + _BLOCK_ELEMS * 28


def _drop_pages(mm: np.memmap, start: int, stop: int) -> None:
    """Release the mapped pages of bytes [start, stop) of mm from this process (they stay in the file and
    the page cache), so that reading a spool does not grow the resident set. Dirty pages are written
    first (msync), so no write can be lost."""
    raw = getattr(mm, "_mmap", None)
    if raw is None or not hasattr(raw, "madvise"):
        return
    import mmap as _mmap

    page = _mmap.PAGESIZE
    a = (start // page) * page
    b = min(len(raw), ((stop + page - 1) // page) * page)
    if b > a:
        raw.flush(a, b - a)
        raw.madvise(_mmap.MADV_DONTNEED, a, b - a)


class ObservationSpool:
    """(M, N) activity and gradient observations on disk, for edge evidence whose inputs do not fit in memory.

    Usage::

        with ObservationSpool(n_nodes, folder="/scratch", max_memory="4GiB") as sp:
            for a, g in batches:          # each (rows, N)
                sp.append(a, g)
            W, info = sp.evidence("spearman")

    Rows are appended as float32 to two files in a private folder under ``folder`` (default: the system
    temp folder). ``evidence`` then ranks (spearman) or standardises (pearson) a block of columns at a
    time, writing the result back in place, and accumulates W = Za^T Zg by a float32 GEMM streamed over
    row chunks of M, reading both files through memory maps without a transpose copy. Results equal
    :func:`edge_evidence` to float32 rounding (the ranks are exact; only the summation order of the
    GEMM differs). Working memory is bounded by ``max_memory`` (default 4 GiB) instead of by M:
    the column block is sized so that it and W fit. The folder and files are removed on close, at
    exit and on SIGTERM (files are unlinked as soon as they are opened on POSIX systems).
    """

    def __init__(self, n_nodes: int, folder: str | None = None, max_memory=None):
        if isinstance(n_nodes, bool) or not isinstance(n_nodes, (int, np.integer)) or n_nodes < 1:
            raise ValueError(f"n_nodes must be a positive integer, got {n_nodes!r}")
        from ..spool import make_spool_dir

        self.n = int(n_nodes)
        self.max_memory = parse_memory(max_memory) if max_memory is not None else 4 * _GIB
        self.folder = make_spool_dir(folder)
        self.m = 0
        self._files = {}
        self._mm = {}
        for name in ("acts", "grads"):
            path = os.path.join(self.folder, f"{name}.f32")
            self._files[name] = open(path, "w+b")
            if os.name == "posix":
                os.unlink(path)  # the open file keeps the data; nothing is left behind, even on SIGKILL
        self.act_sum = np.zeros(self.n, dtype=np.float64)
        self.n_nonfinite = 0
        self.info: dict = {}

    # -- writing
    def append(self, acts, grads) -> None:
        """Append rows: acts and grads (rows, N), same shape (tensors or arrays)."""
        if self._mm:
            raise ValueError("the spool is already finalised; no more rows can be appended")
        a = _as_tensor(acts, "acts").detach()
        g = _as_tensor(grads, "grads").detach()
        if a.dim() != 2 or a.shape != g.shape or a.shape[1] != self.n:
            raise ValueError(f"acts and grads must both be (rows, {self.n}), got {tuple(a.shape)} and {tuple(g.shape)}")
        for name, t in (("acts", a), ("grads", g)):
            arr = np.ascontiguousarray(t.to(device="cpu", dtype=torch.float32).numpy())
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            self.n_nonfinite += bad
            if name == "acts":
                self.act_sum += arr.sum(axis=0, dtype=np.float64)
            self._files[name].write(memoryview(arr).cast("B"))
        self.m += a.shape[0]

    @property
    def spool_bytes(self) -> int:
        return 2 * self.m * self.n * 4

    def act_mean(self) -> torch.Tensor:
        """Column means of the appended activities (float64), for scale_by_act_mean."""
        return torch.from_numpy(self.act_sum / max(self.m, 1))

    def _maps(self) -> dict:
        if not self._mm:
            if self.m == 0:
                raise ValueError("the spool holds no observations")
            for name, f in self._files.items():
                f.flush()
                self._mm[name] = np.memmap(f, dtype=np.float32, mode="r+", shape=(self.m, self.n))
        return self._mm

    # -- computing
    def plan(self) -> dict:
        """Column-block width, GEMM row chunk and the bytes they need under max_memory."""
        m, n = self.m, self.n
        w_bytes = 2 * n * n * 4  # W and one N x N temporary while it is scaled
        self._read = min(_READ_CHUNK, max(1 << 16, self.max_memory // 16))
        read = 2 * self._read
        left = self.max_memory - w_bytes - read
        col_block = min(n, left // (m * _RANK_BYTES_PER_ENTRY)) if left > 0 else 0
        if col_block < 1:
            need = w_bytes + read + m * _RANK_BYTES_PER_ENTRY
            raise ValueError(f"max_memory {self.max_memory:,} bytes is too small for N = {n}, M = {m}: "
                             f"needs at least {need:,}")
        # GEMM: two (rows, N) float32 chunks in flight
        row_chunk = int(max(1, min(m, min(left, 8 * self._read) // (2 * n * 4))))
        return {"col_block": int(col_block), "gemm_rows": row_chunk, "working_bytes": int(
            w_bytes + read + col_block * m * _RANK_BYTES_PER_ENTRY)}

    def _standardise_file(self, mm: np.memmap, method: str, col_block: int, progress=None, phase: str = ""):
        m, n = mm.shape
        scale = torch.ones(n, dtype=torch.float64)
        const = torch.zeros(n, dtype=torch.bool)
        rows_per_read = max(1, self._read // (n * 4))
        for c0 in range(0, n, col_block):
            c1 = min(n, c0 + col_block)
            blk = torch.empty(c1 - c0, m, dtype=torch.float32)
            bnp = blk.numpy()
            for r0 in range(0, m, rows_per_read):
                r1 = min(m, r0 + rows_per_read)
                bnp[:, r0:r1] = mm[r0:r1, c0:c1].T
                _drop_pages(mm, r0 * n * 4, r1 * n * 4)
            s, k = _standardise_into(blk.T, blk, method)
            scale[c0:c1], const[c0:c1] = s, k
            for r0 in range(0, m, rows_per_read):
                r1 = min(m, r0 + rows_per_read)
                mm[r0:r1, c0:c1] = bnp[:, r0:r1].T
                _drop_pages(mm, r0 * n * 4, r1 * n * 4)
            del blk, bnp
            if progress:
                progress(phase, c1, n)
        return scale, const

    def evidence(self, method: str = "spearman", progress: Callable[[str, int, int], None] | None = None):
        """W (N, N) float32 and info {n_constant_act, n_constant_grad, col_block, gemm_rows, spool_bytes,
        max_memory}. The spool's contents are replaced by the ranks (or standardised values): call once.
        ``progress(phase, done, total)`` is called after each column block ("acts", "grads") and each
        GEMM chunk ("gemm")."""
        _check_method(method)
        if self.info.get("done"):
            raise ValueError("evidence() was already computed from this spool (its files now hold ranks)")
        if self.n_nonfinite:
            raise ValueError(f"the observations hold {self.n_nonfinite} NaN/Inf values; ranks and correlations "
                             "of non-finite values are meaningless")
        maps = self._maps()
        plan = self.plan()
        scale_a, const_a = self._standardise_file(maps["acts"], method, plan["col_block"], progress, "acts")
        scale_g, const_g = self._standardise_file(maps["grads"], method, plan["col_block"], progress, "grads")
        m, n = self.m, self.n
        W = torch.zeros(n, n, dtype=torch.float32)
        step = plan["gemm_rows"]
        for r0 in range(0, m, step):
            r1 = min(m, r0 + step)
            za = torch.from_numpy(np.asarray(maps["acts"][r0:r1]))
            zg = torch.from_numpy(np.asarray(maps["grads"][r0:r1]))
            W.addmm_(za.T, zg)  # za.T is a view: BLAS reads it transposed, no copy
            for mm in maps.values():
                _drop_pages(mm, r0 * n * 4, r1 * n * 4)
            if progress:
                progress("gemm", r1, m)
        if method == "spearman":
            W.mul_(scale_a.to(torch.float32)[:, None]).mul_(scale_g.to(torch.float32)[None, :])
        W.clamp_(-1.0, 1.0)
        self.info = {"done": True, "n_constant_act": int(const_a.sum()), "n_constant_grad": int(const_g.sum()),
                     **plan, "spool_bytes": self.spool_bytes, "max_memory": self.max_memory}
        return W, {k: v for k, v in self.info.items() if k != "done"}

    # -- cleanup
    def close(self) -> None:
        from ..spool import remove_spool_dir

        for mm in self._mm.values():
            raw = getattr(mm, "_mmap", None)
            if raw is not None:
                try:
                    raw.close()
                except (BufferError, ValueError):  # a view is still alive: the GC closes it
                    pass
        self._mm = {}
        for f in self._files.values():
            f.close()
        self._files = {}
        remove_spool_dir(self.folder)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------------------------------
# item 5: options


def scale_by_act_mean(W, acts) -> torch.Tensor:
    """W'[i, j] = W[i, j] · mean_m acts[m, i] (docs/science.md §3 item 5, scale_by_act_mean).

    Args:
        W: (N, N) edge evidence; acts: (M, N) the activity matrix W was computed from.
    Returns:
        (N, N) new tensor in W's dtype.
    """
    W = _as_tensor(W, "W")
    A = _as_tensor(acts, "acts")
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square (N, N) matrix, got {tuple(W.shape)}")
    if A.dim() != 2 or A.shape[1] != W.shape[0]:
        raise ValueError(f"acts must be (M, N) with N = {W.shape[0]}, got {tuple(A.shape)}")
    mean = A.to(device=W.device).mean(dim=0, dtype=torch.float64).to(W.dtype)
    return W * mean[:, None]


def apply_known_edge_penalty(W, edge_index, alpha: float) -> torch.Tensor:
    """W'[i, j] = W[i, j] · (1−α)^{indeg_known(j)} · (1+α)^{outdeg_known(i)} (docs/science.md §3 item 5).

    indeg_known(j) / outdeg_known(i) count the rows of edge_index with dst = j / src = i, as given
    (a duplicated edge counts twice, like a degree computed from edge_index).

    Args:
        W: (N, N); edge_index: (2, E) LongTensor of (src, dst) known edges; alpha in [0, 1].
    Returns:
        (N, N) new tensor in W's dtype.
    """
    W = _as_tensor(W, "W")
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square (N, N) matrix, got {tuple(W.shape)}")
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
    if not (0.0 <= a <= 1.0):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    n = W.shape[0]
    e = _edge_tensor(edge_index, n, "edge_index").to(W.device)
    indeg = torch.bincount(e[1], minlength=n).to(torch.float64)
    outdeg = torch.bincount(e[0], minlength=n).to(torch.float64)
    col = torch.pow(1.0 - a, indeg)  # 0**0 = 1: alpha = 1 zeroes only columns with known in-edges
    row = torch.pow(1.0 + a, outdeg)
    return W * (row[:, None] * col[None, :]).to(W.dtype)


def bootstrap_evidence(
    acts,
    grads,
    iters: int,
    n_samples: int,
    seed: int = 0,
    method: str = "spearman",
    row_chunk: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Bootstrap edge evidence (docs/science.md §3 item 5, ``estimate``).

    W = (1/iters) Σ_t edge_evidence(acts[I_t], grads[I_t]), I_t = n_samples row indices drawn uniformly
    with replacement from a torch.Generator seeded with ``seed`` (the same seed gives the same W;
    the reference is unseeded). The same rows I_t index both matrices, keeping observations paired.

    Args:
        acts, grads: (M, N); iters >= 1; n_samples >= 1; progress: called as progress(t, iters)
            after each resample t = 1..iters.
    Returns:
        (N, N) mean evidence, on the inputs' device.
    """
    for name, v in (("iters", iters), ("n_samples", n_samples)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    _check_method(method)
    _check_row_chunk(row_chunk)
    A, G = _obs_pair(acts, grads)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    m, n = A.shape
    total = torch.zeros(n, n, dtype=torch.float64, device=A.device)
    for t in range(int(iters)):
        rows = torch.randint(m, (int(n_samples),), generator=gen).to(A.device)
        total += edge_evidence(A[rows], G[rows], method=method, row_chunk=row_chunk, dtype=dtype)
        if progress is not None:
            progress(t + 1, int(iters))
    return (total / int(iters)).to(dtype)


# ----------------------------------------------------------------------------------------------------
# item 6: ranking against truth


def mrr(scores, query_edges, true_edges=None, *, exclude_self: bool = False) -> dict:
    """Mean reciprocal rank of query edges in their source's row (docs/science.md §3 item 6).

    For query (s, d): candidates are the columns c of scores[s] except other true edges (s, c), c != d
    (``exclude_self`` also drops c = s when s != d; the reference keeps it). NaN scores become −inf
    first (so a NaN target ranks last, not 2nd as in the reference).
    rank = #{c : x_c > x_d} + 0.5·(#{c : x_c = x_d, itself included} + 1); MRR = mean(1 / rank);
    hits@k = fraction of queries with rank <= k. random_mrr = mean over queries of
    (1/n_c)·Σ_{r=1..n_c} 1/r, the expected MRR of a uniformly random ranking of the n_c candidates.

    Args:
        scores: (N, N), scores[i, j] = evidence for edge i -> j.
        query_edges: (2, E) tensor/array of (src, dst), or a list of (src, dst) pairs.
        true_edges: same forms; default = query_edges. Used only for masking.
    Returns:
        {"mrr", "hits@1", "hits@3", "hits@10", "random_mrr": float, "n_queries": int,
         "ranks": list[float], "n_candidates": list[int]}.
    """
    S = _as_tensor(scores, "scores")
    if S.dim() != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"scores must be a square (N, N) matrix, got {tuple(S.shape)}")
    if not S.is_floating_point():
        S = S.to(torch.float64)
    n = S.shape[0]
    q = _edge_tensor(query_edges, n, "query_edges").to(S.device)
    if q.shape[1] == 0:
        raise ValueError("mrr needs at least one query edge")
    t = q if true_edges is None else _edge_tensor(true_edges, n, "true_edges").to(S.device)
    S = torch.nan_to_num(S, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    adj = torch.zeros(n, n, dtype=torch.bool, device=S.device)
    adj[t[0], t[1]] = True
    ranks_out, ncand_out = [], []
    e = q.shape[1]
    # queries per block: keep the (block, N) temporaries around 4M entries
    step = max(1, 4_000_000 // max(n, 1))
    arange_n = torch.arange(n, device=S.device)
    for q0 in range(0, e, step):
        src, dst = q[0, q0:q0 + step], q[1, q0:q0 + step]
        rows = S[src]  # (k, N)
        target = rows.gather(1, dst[:, None])  # (k, 1)
        cand = ~adj[src]
        cand[torch.arange(src.shape[0], device=S.device), dst] = True
        if exclude_self:
            cand &= (arange_n[None, :] != src[:, None]) | (arange_n[None, :] == dst[:, None])
        greater = ((rows > target) & cand).sum(1)
        equal = ((rows == target) & cand).sum(1)
        ranks_out.append(greater.to(torch.float64) + 0.5 * (equal.to(torch.float64) + 1.0))
        ncand_out.append(cand.sum(1))
    ranks = torch.cat(ranks_out).cpu()
    n_c = torch.cat(ncand_out).cpu()
    harmonic = torch.cumsum(1.0 / torch.arange(1, n + 1, dtype=torch.float64), 0)
    rand = harmonic[n_c - 1] / n_c.to(torch.float64)
    out = {
        "mrr": float((1.0 / ranks).mean()),
        "hits@1": float((ranks <= 1).to(torch.float64).mean()),
        "hits@3": float((ranks <= 3).to(torch.float64).mean()),
        "hits@10": float((ranks <= 10).to(torch.float64).mean()),
        "random_mrr": float(rand.mean()),
        "n_queries": int(ranks.numel()),
        "ranks": ranks.tolist(),
        "n_candidates": n_c.tolist(),
    }
    return out


# ----------------------------------------------------------------------------------------------------
# item 1: capture


def capture_block_signals(model, x, y, where: str = "pre", loss: str = "ce"):
    """One forward + backward pass capturing every block's activations and their loss gradients
    (docs/science.md §3 item 1).

    For block l with normalisation module ``model.blocks[l].norm``: the activation is the norm's input
    (``where="pre"``, the residual stream h_l) or its output (``"post"``); the gradient is
    d loss / d activation, loss = mean cross-entropy(model(x), y) (``"ce"``, y (B,) class ids) or mean
    squared error (``"mse"``, y shaped like the output). The pass runs in eval mode under
    ``torch.enable_grad()``; gradients come from ``torch.autograd.grad`` on the captured tensors only,
    so no parameter's ``.grad`` is written. On exit, also on exception, every submodule's training
    flag, every parameter's requires_grad and every parameter's ``.grad`` (None or the same tensor,
    values untouched) are restored and the hooks removed.

    Args:
        model: a module with ``blocks`` (sequence), each block with a ``norm`` submodule, whose
            activations are (B, C) (e.g. fadiag.models.gsnn.GSNN).
        x: (B, in_dim) inputs; y: targets.
    Returns:
        (acts, grads, loss): acts and grads (L, B, C) detached float tensors, loss a float.
    """
    if where not in ("pre", "post"):
        raise ValueError(f"where must be 'pre' or 'post', got {where!r}")
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}")
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ValueError("model has no blocks to capture (expected model.blocks)")
    norms = []
    for i, block in enumerate(blocks):
        norm_mod = getattr(block, "norm", None)
        if not isinstance(norm_mod, torch.nn.Module):
            raise ValueError(f"model.blocks[{i}] has no 'norm' submodule to hook")
        norms.append(norm_mod)

    modes = [(mod, mod.training) for mod in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    saved_grads = [p.grad for p in params]
    captured: list[torch.Tensor | None] = [None] * len(norms)
    handles = []

    def make_hook(i: int):
        def hook(_module, inputs, output):
            captured[i] = inputs[0] if where == "pre" else output

        return hook

    try:
        model.eval()
        # Parameters require grad so that every captured activation is in the autograd graph,
        # even for a frozen model; autograd.grad below never accumulates into .grad.
        for p in params:
            p.requires_grad_(True)
        for i, norm_mod in enumerate(norms):
            handles.append(norm_mod.register_forward_hook(make_hook(i)))
        with torch.enable_grad():
            out = model(x)
            if loss == "ce":
                loss_t = torch.nn.functional.cross_entropy(out, y)
            else:
                loss_t = torch.nn.functional.mse_loss(out, y.to(out.dtype).reshape(out.shape))
            missing = [i for i, c in enumerate(captured) if c is None]
            if missing:
                raise ValueError(f"blocks {missing} were not run by the forward pass")
            targets = [c for c in captured if c.requires_grad]
            grads_list = torch.autograd.grad(loss_t, targets, allow_unused=True) if targets else []
        it = iter(grads_list)
        grads = []
        for c in captured:
            g = next(it) if c.requires_grad else None
            grads.append(torch.zeros_like(c) if g is None else g)
        acts_t = torch.stack([c.detach() for c in captured])
        grads_t = torch.stack([g.detach() for g in grads])
        return acts_t, grads_t, float(loss_t.detach())
    finally:
        for h in handles:
            h.remove()
        for mod, was in modes:
            mod.training = was
        for p, flag, g in zip(params, flags, saved_grads):
            p.requires_grad_(flag)
            p.grad = g
