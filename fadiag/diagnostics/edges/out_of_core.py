"""Item 4 of docs/science.md §3 out of core: observations spooled to disk, ranked a column block at a time,
W streamed over M (docs/scale.md)."""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np
import torch

from ._checks import _as_tensor, _check_method
from .ranks import _BLOCK_ELEMS, _standardise_into

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
        from ...run.spool import make_spool_dir

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
        from ...run.spool import remove_spool_dir

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

