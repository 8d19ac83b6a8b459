"""Input validation shared by the edge-inference functions: bad input raises ``ValueError`` (one line)."""

from __future__ import annotations

import numpy as np
import torch

NORMS = ("l1", "l2", "none")
AGGS = ("sum", "mean", "max")
METHODS = ("spearman", "pearson")


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

