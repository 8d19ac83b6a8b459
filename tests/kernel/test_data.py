"""The built-in eval data: the digits held-out split."""

from __future__ import annotations

import pytest


def test_digits_held_out_split():
    pytest.importorskip("sklearn")
    import numpy as np

    from fadiag.data import digits

    xt, yt = digits("test")
    xr, yr = digits("train")
    xa, ya = digits("all")
    assert (len(xt), len(xr), len(xa)) == (360, 1437, 1797)
    rows = lambda x: {r.tobytes() for r in x.numpy()}
    assert not (rows(xt) & rows(xr)) or len(rows(xt) & rows(xr)) < 5  # duplicated images aside, disjoint
    assert len(rows(xt) | rows(xr)) == len(rows(xa))
    assert np.bincount(yt.numpy()).min() >= 35  # stratified: every class held out in proportion
    with pytest.raises(Exception, match="split"):
        digits("val")
