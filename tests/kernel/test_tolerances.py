"""The shared tolerances (tests/_tol.py) accept what a new numpy/scipy/torch build moves and nothing more."""

from __future__ import annotations

import math

from _tol import close, tol


def test_float32_accepts_the_cross_build_drift_measured_on_the_golden_files():
    # measured between two fresh installs: 2.4e-8, 1.5e-7 and 1.2e-8 relative, all below float32 resolution
    for rel in (2.4e-8, 1.5e-7, 1.2e-8):
        assert close(0.6633228760434804 * (1 + rel), 0.6633228760434804, "float32")


def test_float32_rejects_a_real_change():
    # a median that became a mean, or a learning rate x1.1, moves numbers by 1e-3 .. 1e-1 relative
    assert not close(0.6633 * (1 + 1e-4), 0.6633, "float32")
    assert not close(4.73e-8 * 1.001, 4.73e-8, "float32", atol=0)  # tiny by nature: relative only


def test_float64_is_finer_than_float32_resolution():
    assert tol("float64")["rtol"] < 2.0**-23 < tol("float32")["rtol"]
    assert not close(1.0 + 1e-9, 1.0, "float64")
    assert close(1.0 + 1e-13, 1.0, "float64")


def test_non_finite_values_only_equal_themselves():
    assert close(math.nan, math.nan) and not close(1.0, math.nan)
    assert close(math.inf, math.inf) and not close(1e300, math.inf) and not close(-math.inf, math.inf)
