"""``fadiag.compat.gsnn`` gives upstream GSNN's numbers with only the import changed (issue 27).

Against a faithful rewrite of upstream's ``_fast_corr`` (tests/families/edges/test_upstream_gsnn.py ``ref_fast_corr``: constant
columns detected on the raw values and zeroed, ordinal ranks otherwise) on a tie-heavy GSNN whose graph has
sink nodes (constant-zero gradients) and source-less nodes: the default ``fit`` equals upstream's W; every
ties mode scores constant columns 0; ``estimate`` draws upstream's 2 500 input rows per resample.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fadiag.compat.gsnn import FunctionEdgeInferer, ordinal_edge_evidence, ordinal_ranks
from fadiag.diagnostics import edges as E
from fadiag.models.gsnn_upstream import UpstreamGSNN

from test_upstream_gsnn import ref_fast_corr, ref_observations

NF, NI, NO = 12, 3, 2
# nodes 6..11 reach no output (their gradients are exactly 0: constant columns); 8..11 have no input edge
FUNC = [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 0], [6, 7], [7, 8], [0, 9], [2, 10], [10, 11], [1, 6]]


def _sink_model() -> UpstreamGSNN:
    args = {"edge_index_dict": {"input_to_function": [[n % NI, n] for n in range(8)], "function_to_function": FUNC,
                                "function_to_output": [[n, n % NO] for n in range(6)]},
            "node_names_dict": {"input": [f"i{i}" for i in range(NI)], "function": [f"f{i}" for i in range(NF)],
                                "output": [f"o{i}" for i in range(NO)]},
            "channels": 2, "layers": 4, "node_mlp": False, "norm": "none", "nonlin": "relu"}
    torch.manual_seed(0)
    return UpstreamGSNN(**args).eval()


def _xy(n=256):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, NI, generator=g), torch.randn(n, NO, generator=g)


def test_ordinal_default_equals_upstream_on_a_tie_heavy_capture_with_constant_columns():
    m = _sink_model()
    x, y = _xy()
    A, G = ref_observations(m.state_dict(), x, y, nonlin=F.relu, norm="none", node_mlp=False, point="post")
    const_g = int((G.std(0) == 0).sum())
    const_a = int((A.std(0) == 0).sum())
    assert const_g >= 4 and const_a >= 1  # sink nodes: zero gradients; a node fed by nothing: constant activity
    tied = float(np.mean([1 - A[:, i].unique().numel() / A.shape[0] for i in range(NF)]))
    assert tied > 0.3
    d = FunctionEdgeInferer(m, torch.nn.MSELoss(), use_prenorm=False).fit_details(x, y)  # no keyword upstream lacks
    # the float32 capture is upstream's (float64 forward to float32 rounding); upstream ranks that float32 capture
    np.testing.assert_allclose(d["acts"].double().numpy(), A.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d["grads"].double().numpy(), G.numpy(), rtol=1e-5, atol=1e-9)
    up = ref_fast_corr(d["acts"], d["grads"]).numpy()
    np.testing.assert_allclose(d["W"].numpy(), up, atol=1e-5)
    assert d["constant_columns"] == {"n_constant_act": const_a, "n_constant_grad": const_g}
    # the old ordinal path ranked constant columns 0..M-1 first: |W| up to 1 there, far from upstream's 0
    naive = E.edge_evidence(ordinal_ranks(d["acts"]), ordinal_ranks(d["grads"]), method="pearson").numpy()
    assert np.abs(naive - up).max() > 0.3
    # average ties differ from upstream's ordinal ones on this capture (so the default matters)
    Wa = FunctionEdgeInferer(m, torch.nn.MSELoss(), use_prenorm=False).fit(x, y, ties="average")
    assert np.abs(Wa - up).max() > 1e-2


@pytest.mark.parametrize("ties", ["average", "ordinal"])
def test_constant_columns_are_zero_in_every_ties_mode(ties):
    """Synthetic (M, N) observations with ReLU-like ties and constant columns (0, a nonzero constant, a column
    that is constant up to 1e-13): rows/columns of constant ones are 0, the rest is the mode's Spearman."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    M, N = 200, 6
    A = np.maximum(rng.normal(size=(M, N)), 0.0).astype(np.float32)
    G = np.maximum(rng.normal(size=(M, N)), 0.0).astype(np.float32) * np.sign(rng.normal(size=(M, N))).astype(np.float32)
    A[:, 1] = 0.0
    A[:, 4] = 2.5
    G[:, 2] = 0.0
    G[:, 5] = -0.75
    At, Gt = torch.from_numpy(A), torch.from_numpy(G)
    up = ref_fast_corr(At, Gt).numpy()  # upstream's rule
    if ties == "ordinal":
        W = ordinal_edge_evidence(At, Gt).numpy()
        np.testing.assert_allclose(W, up, atol=1e-5)
    else:
        W = E.edge_evidence(At, Gt).numpy()
        for i in range(N):
            for j in range(N):
                if up[i, j] != 0:
                    assert W[i, j] == pytest.approx(stats.spearmanr(A[:, i], G[:, j]).correlation, abs=2e-6)
    assert np.all(W[[1, 4], :] == 0) and np.all(W[:, [2, 5]] == 0)
    assert np.abs(W).max() > 0.05  # the other entries are not all zero


def test_defaults_are_upstreams_and_extras_keyword_only():
    for fn in (FunctionEdgeInferer.fit, FunctionEdgeInferer.fit_details):
        p = inspect.signature(fn).parameters
        assert list(p)[:11] == ["self", "x", "y", "method", "penalty_factor", "scale_by_act_mean", "estimate",
                                "estimate_iters", "estimate_n_samples", "row_chunk", "verbose"]
        assert p["estimate_n_samples"].default == 2500 and p["estimate_iters"].default == 10
    p = inspect.signature(FunctionEdgeInferer.fit_details).parameters
    assert p["ties"].default == "ordinal" and p["ties"].kind is inspect.Parameter.KEYWORD_ONLY
    assert p["seed"].kind is inspect.Parameter.KEYWORD_ONLY
    c = inspect.signature(FunctionEdgeInferer.__init__).parameters
    assert list(c)[1:] == ["model", "crit", "edge_index", "use_prenorm", "device", "norm", "agg"]
    assert (c["norm"].default, c["agg"].default, c["use_prenorm"].default) == ("l1", "sum", True)


def test_estimate_draws_2500_input_rows_and_scales_each_resample():
    m = _sink_model()
    x, y = _xy(300)
    inf = FunctionEdgeInferer(m, torch.nn.MSELoss())
    got = inf.fit(x, y, estimate=True, estimate_iters=2, scale_by_act_mean=True, seed=7)
    gen = torch.Generator().manual_seed(7)
    want = np.zeros((NF, NF))
    for _ in range(2):
        rows = torch.randint(300, (2500,), generator=gen)  # upstream: 2 500 rows with replacement
        d = inf.fit_details(x[rows], y[rows])
        want += d["W"].double().numpy() * d["acts"].double().mean(0).numpy()[:, None] / 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # not the full batch, and not scaled once by the full batch's activity
    full = inf.fit_details(x, y)
    once = (inf.fit(x, y, estimate=True, estimate_iters=2, seed=7)
            * full["acts"].double().mean(0).numpy()[:, None])
    assert np.abs(got - once).max() > 1e-4
