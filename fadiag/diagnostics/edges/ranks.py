"""The column standardiser behind edge evidence (docs/science.md §3 item 4): average ranks (spearman) or
centred unit-norm values (pearson), a block of columns at a time (memory model: the package docstring)."""

from __future__ import annotations

import numpy as np
import torch

from ..common import STD_FLOOR

# Entries standardised per column block (block = _BLOCK_ELEMS // M columns): bounds the transient
# memory of the sort (values + int64 indices) and tie bookkeeping to a few tens of MB, while each
# sort call stays big enough to run in parallel.
_BLOCK_ELEMS = 1 << 22
_NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


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
    Works a block of _BLOCK_ELEMS // M columns at a time (see the package docstring for memory).

    Returns:
        (scale (N,) float64: z = out[n] * scale[n] has unit norm, 0 for a constant column;
         constant-column mask (N,) bool).
    """
    m, n = x.shape
    col_block = max(1, min(n, _BLOCK_ELEMS // m))
    if method == "pearson":
        return _standardise_pearson(x, out, col_block)
    return _rank_into(x, out, col_block)


def _standardise_pearson(x: torch.Tensor, out: torch.Tensor, col_block: int):
    """pearson: out[n] = centred x[:, n] over its norm (float64), scale 1; a column whose population std
    is at or below STD_FLOOR is constant (out 0, scale 0)."""
    m, n = x.shape
    const = torch.zeros(n, dtype=torch.bool, device=x.device)
    scale = torch.ones(n, dtype=torch.float64, device=x.device)
    for c0 in range(0, n, col_block):
        c1 = min(n, c0 + col_block)
        b64 = x[:, c0:c1].T.to(torch.float64)
        b64 = b64 - b64.mean(dim=1, keepdim=True)
        ss = (b64 * b64).sum(dim=1)
        bad = (ss / m).sqrt() <= STD_FLOOR
        inv = torch.where(bad, 0.0, 1.0 / ss.sqrt().clamp_min(1e-300))
        out[c0:c1].copy_(b64 * inv[:, None])
        const[c0:c1] = bad
        scale[c0:c1] = torch.where(bad, 0.0, 1.0)
    return scale, const


class _RankBuffers:
    """The per-block working set of ``_rank_into``, allocated once for the widest block."""

    def __init__(self, x: torch.Tensor, out: torch.Tensor, kmax: int):
        m, dev = x.shape[0], x.device
        self.m, self.dev, self.centre = m, dev, (m - 1) / 2.0
        # centred positions 0..M-1, exact in float32 up to 2^23 rows
        self.pos = torch.arange(m, dtype=torch.float64, device=dev).sub_(self.centre).to(out.dtype)
        self.sv = torch.empty(kmax, m, dtype=x.dtype, device=dev)
        self.idx = torch.empty(kmax, m, dtype=torch.long, device=dev)
        # int32 group-start flags of a block; in the many-ties path the running count overwrites them
        self.flags = torch.empty(kmax, m, dtype=torch.int32 if kmax * m < 2**31 else torch.int64, device=dev)
        # numpy >= 2 argsorts with SIMD sorting networks: 0.5-0.7x the CPU of torch.sort on continuous, ReLU +
        # quantised and 8-level data alike (docs/scale.md); older numpy and other devices use torch.sort
        self.numpy_sort = dev.type == "cpu" and x.dtype in (torch.float32, torch.float64) and m > 1 and _NUMPY_2

    def sort(self, src: torch.Tensor):
        """(sorted values, indices) of each row of src (k, M), in the buffers."""
        k = src.shape[0]
        if self.numpy_sort:
            idx = self.idx[:k]
            _argsort_rows(src.numpy(), idx.numpy())
            return torch.gather(src, 1, idx, out=self.sv[:k]), idx
        return torch.sort(src, dim=1, out=(self.sv[:k], self.idx[:k]))


def _rank_into(x: torch.Tensor, out: torch.Tensor, col_block: int):
    """spearman: centred average ranks of each column of x into out's rows (see ``_standardise_into``)."""
    m, n = x.shape
    dev = x.device
    const = torch.zeros(n, dtype=torch.bool, device=dev)
    scale = torch.ones(n, dtype=torch.float64, device=dev)
    ss_no_ties = (m ** 3 - m) / 12.0
    # Same dtype: one fast whole-matrix transpose into out, then sort out's rows in place of a copy.
    # Otherwise sort each block in x's own dtype, so that no rounding can create artificial ties.
    in_place = x.dtype == out.dtype
    if in_place and not (x.T.data_ptr() == out.data_ptr() and x.T.stride() == out.stride()):
        out.copy_(x.T)
    buf = _RankBuffers(x, out, min(n, col_block))
    for c0 in range(0, n, col_block):
        c1 = min(n, c0 + col_block)
        k = c1 - c0
        dst = out[c0:c1]
        sv, idx = buf.sort(dst if in_place else x[:, c0:c1].T.contiguous())
        # flags[r, j] = 1 where sorted position j starts a new group of equal values (j = 0 always)
        flags = buf.flags[:k]
        flags[:, 0] = 1
        torch.ne(sv[:, 1:], sv[:, :-1], out=flags[:, 1:])
        n_groups = int(torch.count_nonzero(flags))
        n_tied = k * m - n_groups  # neighbour pairs that tie
        ss = torch.full((k,), ss_no_ties, dtype=torch.float64, device=dev)
        bad = torch.full((k,), m == 1, dtype=torch.bool, device=dev)  # one row: all constant
        if n_tied * 16 <= k * m:
            row, first, last = _ranks_few_ties(dst, idx, flags, n_tied, buf)
        else:
            row, first, last = _ranks_many_ties(dst, idx, flags, n_groups, buf)
        if row.numel():
            size = last - first + 1
            t = size.to(torch.float64)
            ss.index_add_(0, row, -(t ** 3 - t) / 12.0)
            # a constant column is one group of all M rows: tested exactly, not via a rounded ss
            bad[row[size == m]] = True
        const[c0:c1] = bad
        scale[c0:c1] = torch.where(bad, 0.0, 1.0 / ss.clamp_min(1e-300).sqrt())
    return scale, const


def _ranks_few_ties(dst, idx, flags, n_tied: int, buf: _RankBuffers):
    """Few ties: positions 0..M-1 everywhere, then overwrite the members of each tie group with their mean.
    Returns the tie groups (row, first, last) in sorted positions."""
    k, m, dev = dst.shape[0], buf.m, buf.dev
    dst.scatter_(1, idx, buf.pos.expand(k, m))
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
        mean_pos = ((first + last).to(torch.float64) * 0.5 - buf.centre).to(dst.dtype)
        dst[r, idx[r, p]] = mean_pos[grp]
    return row, first, last


def _ranks_many_ties(dst, idx, flags, n_groups: int, buf: _RankBuffers):
    """Many ties (ReLU zeros, quantised values): label every sorted entry with its group (a running count of
    group starts over the flattened block), give each group its mean position, and scatter the labelled
    values back in one pass. Returns the tie groups (row, first, last) in sorted positions."""
    k, m, dev = dst.shape[0], buf.m, buf.dev
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
    tdtype = dst.dtype if k * m < 2**23 else torch.float64
    table = torch.empty(n_groups + 1, dtype=tdtype, device=dev)
    table[0] = 0.0  # gid counts from 1: entry 0 is a placeholder
    torch.add(starts.to(tdtype), size.to(tdtype), alpha=0.5, out=table[1:])
    # the sorted values are no longer needed: their buffer takes the labelled values
    zbuf = buf.sv[:k].view(-1) if buf.sv.dtype == tdtype else None
    z = torch.index_select(table, 0, gid, out=zbuf) if zbuf is not None else table.index_select(0, gid)
    z = z.view(k, m)
    del gid, table
    # back to centred within-row positions: subtract r·M + (M - 1)/2 from row r (and the 0.5)
    offset = torch.arange(k, device=dev, dtype=torch.float64) * m + buf.centre + 0.5
    z -= offset.to(z.dtype)[:, None]
    dst.scatter_(1, idx, z if z.dtype == dst.dtype else z.to(dst.dtype))
    del z
    tied = (size > 1).nonzero().squeeze(1)
    row = starts[tied] // m
    first = starts[tied] - row * m
    last = first + size[tied] - 1
    return row, first, last
