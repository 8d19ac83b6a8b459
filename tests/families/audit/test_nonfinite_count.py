"""count_nonfinite's fast path (a finite sum means no NaN/Inf) never hides one: against an element loop."""

from __future__ import annotations

import math

import pytest
import torch

from fadiag.diagnostics.common import count_nonfinite


def _loop(t) -> int:
    return sum(not math.isfinite(v) for v in t.double().flatten().tolist())


@pytest.mark.parametrize("case", ["clean", "nan", "inf_and_minus_inf", "overflowing_sum", "half", "empty"])
def test_count_equals_an_element_loop(case):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(50, 7, generator=g)
    if case == "nan":
        t[3, 2] = float("nan")
    elif case == "inf_and_minus_inf":  # inf + (-inf): the sum is NaN, both are counted
        t[0, 0], t[1, 1] = float("inf"), float("-inf")
    elif case == "overflowing_sum":  # every value finite, the float32 sum overflows: still 0
        t[:] = 3e38
    elif case == "half":
        t = t.half()
        t[4, 4] = float("inf")
    elif case == "empty":
        t = t[:0]
    assert count_nonfinite(t, [t[:2]]) == _loop(t) + _loop(t[:2])
