"""Items 4-6 of docs/science.md §3: edge evidence W, its options (scale, known-edge penalty, bootstrap) and
the ranking of truth edges in it (MRR)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ._checks import _as_tensor, _check_method, _check_row_chunk, _edge_tensor, _obs_pair
from .ranks import _standardise_into

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

