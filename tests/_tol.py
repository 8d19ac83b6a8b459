"""Numeric tolerances for the whole suite, written once and justified by the compute dtype.

A result computed in float32 is only defined to a few units in the last place of float32 (epsilon
1.19e-7): a BLAS with another summation order, another thread count or a newer numpy/scipy/torch build
moves it by that much. Reductions over n terms accumulate up to ~sqrt(n) ULPs in practice, so

- float32 results: relative 1e-5 (~84 ULPs), absolute 1e-6 for quantities that are differences or
  correlations of unit-scale terms (a value near 0 has no relative precision of its own);
- float64 results: relative 1e-10, absolute 1e-12.

Pass ``atol=0`` for float32 quantities that are tiny by nature (a gradient norm of 1e-8 is known to
relative precision, and an absolute 1e-6 would accept anything there). A comparison finer than these is
a test of the machine, not of fadiag; a comparison much coarser needs a reason written beside it.
"""

from __future__ import annotations

import math

import numpy as np

TOL = {
    "float32": {"rtol": 1e-5, "atol": 1e-6},
    "float64": {"rtol": 1e-10, "atol": 1e-12},
}


def tol(dtype: str = "float32", *, atol: float | None = None) -> dict:
    """``{"rtol": .., "atol": ..}`` for ``dtype`` ('float32' | 'float64'), for numpy/torch assert helpers."""
    t = dict(TOL[str(dtype).replace("torch.", "")])
    if atol is not None:
        t["atol"] = atol
    return t


def close(got: float, want: float, dtype: str = "float32", *, atol: float | None = None) -> bool:
    """|got - want| <= atol + rtol * |want|, NaN equal to NaN, inf equal to the same inf."""
    t = tol(dtype, atol=atol)
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if math.isinf(want) or math.isinf(got):
        return got == want
    return abs(got - want) <= t["atol"] + t["rtol"] * abs(want)


def assert_close(got, want, dtype: str = "float32", *, atol: float | None = None, where: str = "") -> None:
    """Arrays, tensors or scalars: elementwise within the dtype's tolerance (numpy's rule, NaN == NaN)."""
    g = got.detach().cpu().double().numpy() if hasattr(got, "detach") else np.asarray(got, dtype=float)
    w = want.detach().cpu().double().numpy() if hasattr(want, "detach") else np.asarray(want, dtype=float)
    np.testing.assert_allclose(g, w, equal_nan=True, err_msg=where, **tol(dtype, atol=atol))


def assert_tree_close(got, want, dtype: str = "float32", *, atol: float | None = None, where: str = "$") -> None:
    """JSON-like trees: identical structure, keys and strings; numbers within the dtype's tolerance."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (where, sorted(set(got) ^ set(want)))
        for k in want:
            assert_tree_close(got[k], want[k], dtype, atol=atol, where=f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, len(got), len(want))
        for i, (g, w) in enumerate(zip(got, want)):
            assert_tree_close(g, w, dtype, atol=atol, where=f"{where}[{i}]")
    elif isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        assert close(float(got), want, dtype, atol=atol), (where, got, want, tol(dtype, atol=atol))
    else:
        assert got == want, (where, got, want)
