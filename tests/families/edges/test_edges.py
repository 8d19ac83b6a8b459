"""Edge inference (docs/science.md §3): slow references and degenerate inputs for fadiag.diagnostics.edges."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _tol import close
from fadiag.diagnostics import edges as E
from fadiag.models.gsnn import GSNN

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------
# references


def spearman_block_ref(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """scipy.stats.spearmanr on the concatenated (M, 2N) matrix, block [:N, N:]; constant columns -> 0.

    scipy returns a single NaN for the whole matrix once any column is constant, so the constant
    columns are left out of the scipy call and their rows/columns set to 0 afterwards.
    """
    n = A.shape[1]
    X = np.concatenate([A, G], axis=1).astype(np.float64)
    live = np.array([np.unique(X[:, c]).size > 1 for c in range(2 * n)])
    out = np.zeros((2 * n, 2 * n))
    idx = np.flatnonzero(live)
    if idx.size >= 2:
        rho = scipy.stats.spearmanr(X[:, idx]).statistic
        rho = np.array([[1.0, rho], [rho, 1.0]]) if np.ndim(rho) == 0 else rho
        out[np.ix_(idx, idx)] = rho
    return out[:n, n:]


def heavy_ties(rng: np.random.Generator, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """ReLU zeros and quantised values in acts, a few integer levels in grads, one constant column each."""
    A = np.maximum(rng.normal(size=(m, n)), 0).round(1).astype(np.float32)
    G = rng.integers(-3, 4, size=(m, n)).astype(np.float32)
    A[:, 2] = 1.5
    G[:, 4] = 0.0
    G[:, 5] = 0.7 * A[:, 5] + 0.1 * rng.integers(0, 3, size=m)  # a real dependence, with ties
    return A, G


def slow_mrr(S: np.ndarray, queries, truth) -> list[float]:
    """Obviously correct loop: ranks per docs/science.md §3 item 6, NaN -> -inf."""
    S = np.where(np.isnan(S), -np.inf, S)
    truth = set(map(tuple, truth))
    ranks = []
    for s, d in queries:
        x = S[s, d]
        greater = equal = 0
        for c in range(S.shape[0]):
            if c != d and (s, c) in truth:
                continue
            if S[s, c] > x:
                greater += 1
            elif S[s, c] == x:
                equal += 1
        ranks.append(greater + 0.5 * (equal + 1))
    return ranks


# ----------------------------------------------------------------------------------------------------
# edge_evidence


def test_spearman_matches_scipy_with_heavy_ties_and_constant_columns():
    rng = np.random.default_rng(0)
    A, G = heavy_ties(rng, 300, 8)
    assert (A == 0).mean() > 0.4  # the ReLU zeros really are there
    W, info = E.edge_evidence(A, G, return_info=True)
    ref = spearman_block_ref(A, G)
    assert W.shape == (8, 8) and W.dtype == torch.float32
    np.testing.assert_allclose(W.numpy(), ref, atol=1e-5, rtol=0)
    assert info == {"n_constant_act": 1, "n_constant_grad": 1}
    assert torch.all(W[2] == 0) and torch.all(W[:, 4] == 0)
    assert W[5, 5] > 0.8  # the planted dependence, so the comparison above is not between zeros


def test_spearman_uses_average_ranks_not_sort_order():
    # acts tie at 0 in rows 0-2; ordinal ranks would correlate them with grads = row index.
    A = np.array([[0.0], [0.0], [0.0], [1.0], [2.0]])
    G = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
    W = E.edge_evidence(A, G)
    expected = scipy.stats.spearmanr(A[:, 0], G[:, 0]).statistic  # 0.8485..., ordinal would give 1.0
    assert W[0, 0].item() == pytest.approx(expected, abs=1e-6)
    assert W[0, 0].item() < 0.9


@pytest.mark.parametrize("regime", ["few ties", "many groups", "few groups"])
def test_spearman_tie_regimes_match_scipy(regime):
    # edge_evidence labels ties three ways (sparse fix-ups; dense labels found by nonzero();
    # dense labels found by binary search), chosen per block by tie density: check each one.
    rng = np.random.default_rng(10)
    m, n = 2000, 5
    X = rng.normal(size=(m, 2 * n))
    if regime == "few ties":
        X = X.round(4)  # a few exact duplicates per column
    elif regime == "many groups":
        X = np.maximum(X, 0)  # half zeros, the rest distinct
    else:
        X = np.maximum(X, 0).round(0)  # a handful of values
    X = X.astype(np.float32)
    tied = np.mean([np.mean(np.diff(np.sort(X[:, c])) == 0) for c in range(2 * n)])
    groups = np.mean([np.unique(X[:, c]).size for c in range(2 * n)])
    assert {"few ties": 0 < tied < 1 / 16, "many groups": tied > 1 / 16 and groups > m / 8,
            "few groups": groups < m / 8}[regime]
    W = E.edge_evidence(X[:, :n], X[:, n:])
    np.testing.assert_allclose(W.numpy(), spearman_block_ref(X[:, :n], X[:, n:]), atol=1e-5, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(2, 40),
    n=st.integers(1, 5),
    levels=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
)
def test_spearman_property_vs_scipy(m, n, levels, seed):
    rng = np.random.default_rng(seed)
    A = rng.integers(0, levels, size=(m, n)).astype(np.float32)
    G = (rng.integers(0, levels, size=(m, n)) * 0.5 - 1).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = spearman_block_ref(A, G)
    W = E.edge_evidence(torch.from_numpy(A), torch.from_numpy(G))
    np.testing.assert_allclose(W.numpy(), ref, atol=1e-5, rtol=0)


def test_pearson_matches_numpy_corrcoef():
    rng = np.random.default_rng(1)
    A = rng.normal(3.0, 2.0, size=(200, 6)).astype(np.float32)
    G = (rng.normal(size=(200, 6)) * 1e-6).astype(np.float32)  # gradient-sized values
    G[:, 1] += 2e-6 * A[:, 1]
    A[:, 3] = 7.0
    X = np.concatenate([A, G], 1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.nan_to_num(np.corrcoef(X.T)[:6, 6:], nan=0.0)
    W, info = E.edge_evidence(A, G, method="pearson", return_info=True)
    np.testing.assert_allclose(W.numpy(), ref, atol=1e-6, rtol=0)
    assert info["n_constant_act"] == 1 and W[1, 1] > 0.8


def test_float64_input_is_ranked_in_float64():
    # 1 + 1e-12 and 1 are equal in float32: ranking after a float32 cast would invent a tie.
    A = np.array([[1.0], [1.0 + 1e-12], [1.0 + 2e-12], [5.0]])
    G = np.array([[4.0], [3.0], [2.0], [1.0]])
    assert E.edge_evidence(A, G)[0, 0].item() == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 7, 8, 100])
def test_row_chunk_matches_unchunked(chunk):
    rng = np.random.default_rng(2)
    A, G = heavy_ties(rng, 300, 8)
    full = E.edge_evidence(A, G)
    # spearman: centred ranks are multiples of 1/2 and sums stay below 2^24 here, so chunking is exact
    assert torch.equal(E.edge_evidence(A, G, row_chunk=chunk), full)
    p_full = E.edge_evidence(A, G, method="pearson", dtype=torch.float64)
    p_chunk = E.edge_evidence(A, G, method="pearson", row_chunk=chunk, dtype=torch.float64)
    np.testing.assert_allclose(p_chunk.numpy(), p_full.numpy(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_row_chunk_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="row_chunk"):
        E.edge_evidence(np.ones((4, 2)), np.ones((4, 2)), row_chunk=bad)


def test_nan_input_raises_with_count():
    A = np.random.default_rng(3).normal(size=(10, 3))
    A[0, 0] = A[4, 2] = np.nan
    with pytest.raises(ValueError, match="acts has 2 NaN and 0 Inf"):
        E.edge_evidence(A, np.ones((10, 3)))
    G = np.ones((10, 3))
    G[1, 1] = np.inf
    with pytest.raises(ValueError, match="grads has 0 NaN and 1 Inf"):
        E.edge_evidence(np.ones((10, 3)), G)


@pytest.mark.parametrize(
    "a_shape, g_shape, match",
    [((10, 3), (10, 4), "same shape"), ((10,), (10,), "2-D"), ((0, 3), (0, 3), "at least one row")],
)
def test_bad_shapes_raise(a_shape, g_shape, match):
    with pytest.raises(ValueError, match=match):
        E.edge_evidence(np.zeros(a_shape), np.zeros(g_shape))


def test_bad_method_raises():
    with pytest.raises(ValueError, match="method"):
        E.edge_evidence(np.ones((4, 2)), np.ones((4, 2)), method="kendall")


def test_one_row_and_all_constant_give_zeros():
    W, info = E.edge_evidence(np.ones((1, 3)), np.arange(3.0)[None], return_info=True)
    assert torch.equal(W, torch.zeros(3, 3)) and info == {"n_constant_act": 3, "n_constant_grad": 3}
    W, info = E.edge_evidence(np.full((5, 2), 2.0), np.full((5, 2), -1.0), return_info=True)
    assert torch.equal(W, torch.zeros(2, 2)) and info["n_constant_grad"] == 2


def test_inputs_are_not_modified():
    rng = np.random.default_rng(4)
    A = torch.from_numpy(rng.normal(size=(50, 4)).astype(np.float32))
    G = torch.from_numpy(rng.normal(size=(50, 4)).astype(np.float32))
    a0, g0 = A.clone(), G.clone()
    E.edge_evidence(A, G)
    assert torch.equal(A, a0) and torch.equal(G, g0)


# ----------------------------------------------------------------------------------------------------
# reduce_channels, pair_observations, options


@pytest.mark.parametrize("norm", ["l1", "l2", "none"])
@pytest.mark.parametrize("agg", ["sum", "mean", "max"])
def test_reduce_channels_matches_loop(norm, agg):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4, 7))
    groups = np.array([0, 0, 1, 3, 3, 3, 1])  # node 2 has no channels
    out = E.reduce_channels(torch.from_numpy(x), torch.from_numpy(groups), 4, norm=norm, agg=agg)
    t = {"l1": np.abs(x), "l2": x**2, "none": x}[norm]
    ref = np.zeros((3, 4, 4))
    for node in range(4):
        cols = [c for c in range(7) if groups[c] == node]
        if not cols:
            continue
        vals = t[:, :, cols]
        ref[:, :, node] = {"sum": vals.sum(-1), "mean": vals.mean(-1), "max": vals.max(-1)}[agg]
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    assert torch.all(out[..., 2] == 0)


def test_reduce_channels_validates():
    with pytest.raises(ValueError, match="channel_groups"):
        E.reduce_channels(torch.ones(2, 3, 4), torch.tensor([0, 1, 2]), 3)
    with pytest.raises(ValueError, match="outside"):
        E.reduce_channels(torch.ones(2, 3, 2), torch.tensor([0, 5]), 3)
    with pytest.raises(ValueError, match="norm"):
        E.reduce_channels(torch.ones(2, 3, 2), torch.tensor([0, 1]), 3, norm="l3")


def test_pair_observations_pairs_layer_l_with_l_plus_1():
    L, B, N = 4, 3, 2
    a = torch.arange(L * B * N, dtype=torch.float32).reshape(L, B, N)
    g = -a
    A, G = E.pair_observations(a, g)
    assert A.shape == G.shape == ((L - 1) * B, N)
    assert torch.equal(A[B + 1], a[1, 1]) and torch.equal(G[B + 1], g[2, 1])
    with pytest.raises(ValueError, match="L >= 2"):
        E.pair_observations(a[:1], g[:1])


def test_scale_by_act_mean_matches_loop():
    rng = np.random.default_rng(6)
    W = torch.from_numpy(rng.normal(size=(4, 4)))
    A = torch.from_numpy(rng.uniform(size=(30, 4)))
    out = E.scale_by_act_mean(W, A)
    for i in range(4):
        for j in range(4):
            assert out[i, j].item() == pytest.approx(W[i, j].item() * A[:, i].mean().item(), rel=1e-12)


def test_penalty_matches_loop():
    rng = np.random.default_rng(7)
    n = 5
    W = torch.from_numpy(rng.normal(size=(n, n)))
    edges = [(0, 1), (0, 2), (3, 1), (4, 1), (2, 0)]
    alpha = 0.3
    out = E.apply_known_edge_penalty(W, torch.tensor(edges).T, alpha)
    for i in range(n):
        for j in range(n):
            indeg = sum(1 for _, d in edges if d == j)
            outdeg = sum(1 for s, _ in edges if s == i)
            ref = W[i, j].item() * (1 - alpha) ** indeg * (1 + alpha) ** outdeg
            assert out[i, j].item() == pytest.approx(ref, rel=1e-12)
    assert out[3, 1].item() == pytest.approx(W[3, 1].item() * 0.7**3 * 1.3, rel=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        E.apply_known_edge_penalty(W, torch.tensor(edges).T, 1.5)
    with pytest.raises(ValueError, match="outside"):
        E.apply_known_edge_penalty(W, torch.tensor([[0], [9]]), 0.1)


def test_bootstrap_is_seeded_and_is_the_mean_of_resamples():
    rng = np.random.default_rng(8)
    A, G = heavy_ties(rng, 120, 6)
    calls = []
    W1 = E.bootstrap_evidence(A, G, iters=3, n_samples=80, seed=11,
                              progress=lambda i, n: calls.append((i, n)))
    W2 = E.bootstrap_evidence(A, G, iters=3, n_samples=80, seed=11)
    W3 = E.bootstrap_evidence(A, G, iters=3, n_samples=80, seed=12)
    assert torch.equal(W1, W2)
    assert (W1 - W3).abs().max() > 1e-3
    assert calls == [(1, 3), (2, 3), (3, 3)]
    gen = torch.Generator().manual_seed(11)
    At, Gt = torch.from_numpy(A), torch.from_numpy(G)
    ref = torch.zeros(6, 6, dtype=torch.float64)
    for _ in range(3):
        rows = torch.randint(120, (80,), generator=gen)
        ref += E.edge_evidence(At[rows], Gt[rows])
    np.testing.assert_allclose(W1.numpy(), (ref / 3).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="iters"):
        E.bootstrap_evidence(A, G, iters=0, n_samples=10)


# ----------------------------------------------------------------------------------------------------
# mrr


def test_mrr_matches_slow_loop_with_ties_and_nan():
    rng = np.random.default_rng(9)
    n = 9
    S = rng.integers(0, 4, size=(n, n)).astype(np.float64)  # many ties
    S[rng.random((n, n)) < 0.15] = np.nan
    truth = sorted({(int(s), int(d)) for s, d in rng.integers(0, n, size=(20, 2))})
    res = E.mrr(torch.from_numpy(S), truth)
    ref = slow_mrr(S, truth, truth)
    np.testing.assert_allclose(res["ranks"], ref)
    assert res["mrr"] == pytest.approx(np.mean(1 / np.array(ref)), rel=1e-12)
    for k in (1, 3, 10):
        assert res[f"hits@{k}"] == pytest.approx(np.mean(np.array(ref) <= k))
    assert res["n_queries"] == len(truth)


def test_mrr_nan_target_ranks_last():
    S = torch.tensor([[0.1, float("nan"), 0.3, 0.2], [0.0] * 4, [0.0] * 4, [0.0] * 4])
    res = E.mrr(S, [(0, 1)])
    assert res["ranks"] == [4.0]  # worst of 4 candidates; the reference would give 2
    # query (0, 2) with (0, 1) also true: (0, 1) is masked, 3 candidates, 0.3 is the best
    res = E.mrr(S, [(0, 2)], true_edges=[(0, 1), (0, 2)])
    assert res["ranks"] == [1.0] and res["n_candidates"] == [3]


def test_mrr_tie_rank_and_random_baseline():
    S = torch.zeros(4, 4)
    res = E.mrr(S, [(1, 2)])
    assert res["ranks"] == [2.5]  # 0 greater, 4 equal: 0 + 0.5 * (4 + 1)
    assert res["random_mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    S = torch.arange(16.0).reshape(4, 4)
    res = E.mrr(S, [(0, 3), (0, 0)])  # two true edges in row 0: each masks the other
    assert res["ranks"] == [1.0, 3.0] and res["n_candidates"] == [3, 3]
    assert res["random_mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert E.mrr(S, [(1, 0)], exclude_self=True)["n_candidates"] == [3]


def test_mrr_validates():
    with pytest.raises(ValueError, match="square"):
        E.mrr(torch.zeros(3, 4), [(0, 1)])
    with pytest.raises(ValueError, match="outside"):
        E.mrr(torch.zeros(3, 3), [(0, 3)])
    with pytest.raises(ValueError, match="at least one"):
        E.mrr(torch.zeros(3, 3), [])


# ----------------------------------------------------------------------------------------------------
# capture_block_signals and the GSNN


def tiny_gsnn(seed=0) -> GSNN:
    torch.manual_seed(seed)
    return GSNN(in_dim=3, out_dim=2, n_nodes=4, channels_per_node=2, depth=3,
                edges=[[0, 1], [1, 2], [2, 3], [0, 3]])


def independent_grads(model: GSNN, x, y, where: str):
    """Slow reference: re-run the blocks by hand in float64, autograd w.r.t. each captured tensor."""
    m = model.double()
    h = m.embed(x.double())
    taps = []
    for block in m.blocks:
        z = block.norm(h)
        taps.append(h if where == "pre" else z)
        h = h + torch.relu(block.lin(z))
    out = m.out_head(m.out_ln(h))
    loss = torch.nn.functional.mse_loss(out, y.double())
    grads = torch.autograd.grad(loss, taps)
    model.float()
    return torch.stack([t.detach() for t in taps]).float(), torch.stack(grads).float()


@pytest.mark.parametrize("where", ["pre", "post"])
def test_capture_gradients_match_autograd(where):
    model = tiny_gsnn()
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    acts, grads, loss = E.capture_block_signals(model, x, y, where=where, loss="mse")
    ref_acts, ref_grads = independent_grads(model, x, y, where)
    assert acts.shape == grads.shape == (3, 5, 8)
    torch.testing.assert_close(acts, ref_acts, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads, ref_grads, atol=1e-7, rtol=1e-3)
    assert grads.abs().max() > 1e-4  # not vacuous
    with torch.no_grad():
        assert close(loss, float(torch.nn.functional.mse_loss(model(x), y)), "float32", atol=0)


def test_capture_ce_loss():
    model = tiny_gsnn()
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])
    _, grads, loss = E.capture_block_signals(model, x, y)
    with torch.no_grad():
        assert close(loss, float(torch.nn.functional.cross_entropy(model(x), y)), "float32", atol=0)
    assert grads.abs().max() > 0


def _mess_up_state(model: GSNN):
    model.train()
    model.blocks[1].eval()
    model.embed.weight.requires_grad_(False)
    old = torch.full_like(model.out_head.weight, 3.0)
    model.out_head.weight.grad = old
    return old


def _assert_state_restored(model: GSNN, old_grad):
    assert model.training and not model.blocks[1].training and model.blocks[0].training
    assert model.embed.weight.requires_grad is False
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "embed.weight")
    assert model.out_head.weight.grad is old_grad and torch.all(old_grad == 3.0)
    assert all(p.grad is None for n, p in model.named_parameters() if n != "out_head.weight")
    assert all(len(b.norm._forward_hooks) == 0 for b in model.blocks)


def test_capture_restores_state():
    model = tiny_gsnn()
    old = _mess_up_state(model)
    E.capture_block_signals(model, torch.randn(4, 3), torch.randn(4, 2), loss="mse")
    _assert_state_restored(model, old)


def test_capture_restores_state_when_forward_raises():
    model = tiny_gsnn()
    old = _mess_up_state(model)
    with pytest.raises(RuntimeError):
        E.capture_block_signals(model, torch.randn(4, 5), torch.randn(4, 2), loss="mse")  # wrong in_dim
    _assert_state_restored(model, old)


def test_capture_uses_eval_mode():
    model = tiny_gsnn()
    model.blocks[0].norm.register_forward_hook(lambda mod, i, o: seen.append(mod.training))
    seen: list[bool] = []
    model.train()
    E.capture_block_signals(model, torch.randn(4, 3), torch.randn(4, 2), loss="mse")
    assert seen == [False] and model.training


def test_gsnn_mask_follows_graph():
    model = tiny_gsnn()
    w = model.blocks[0].lin
    eff = (w.weight * w.mask).detach()
    groups = model.channel_groups
    for out_c in range(8):
        for in_c in range(8):
            src, dst = int(groups[in_c]), int(groups[out_c])
            live = src == dst or [src, dst] in [[0, 1], [1, 2], [2, 3], [0, 3]]
            assert (eff[out_c, in_c] != 0) == live, (src, dst)
    assert model.edge_index.tolist() == [[0, 1, 2, 0], [1, 2, 3, 3]]
    # node 3's channels cannot reach node 0 in one block: the Jacobian block is 0
    h = torch.randn(1, 8, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda t: model.blocks[0].lin(t), h)[0, :, 0, :]
    assert torch.all(jac[0:2, 6:8] == 0) and torch.any(jac[6:8, 0:2] != 0)
    with pytest.raises(ValueError, match="outside"):
        GSNN(in_dim=3, out_dim=2, n_nodes=4, channels_per_node=2, depth=1, edges=[[0, 4]])


def test_gsnn_input_and_output_nodes():
    torch.manual_seed(0)
    model = GSNN(in_dim=2, out_dim=2, n_nodes=4, channels_per_node=2, depth=1, edges=[[0, 1]],
                 input_nodes=[3, 0], output_nodes=[1, 2])
    h0 = model.embed(torch.tensor([[1.0, 0.0]])) - model.embed(torch.zeros(1, 2))
    assert torch.all(h0[0, :6] == 0) and torch.all(h0[0, 6:] != 0)  # input 0 -> node 3 only
    jac = torch.autograd.functional.jacobian(model.out_head, torch.randn(1, 8))[0, :, 0, :]
    assert torch.all(jac[0, [0, 1, 4, 5, 6, 7]] == 0) and torch.all(jac[1, [0, 1, 2, 3, 6, 7]] == 0)
    with pytest.raises(ValueError, match="input_nodes"):
        GSNN(in_dim=2, out_dim=2, n_nodes=4, channels_per_node=2, depth=1, input_nodes=[0])


def test_gsnn_state_dict_roundtrip(tmp_path):
    model = tiny_gsnn()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    sd = torch.load(tmp_path / "m.pt", weights_only=True)
    assert not any("mask" in k or "channel_groups" in k for k in sd)  # derived from args, not stored
    other = tiny_gsnn(seed=1)
    other.load_state_dict(sd, strict=True)
    x = torch.randn(3, 3)
    torch.testing.assert_close(other(x), model(x))
    out, hidden = model(x, return_hidden=True)
    assert len(hidden) == 4 and hidden[0].shape == (3, 8)


def test_pipeline_on_tiny_model_end_to_end():
    model = tiny_gsnn()
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    acts, grads, _ = E.capture_block_signals(model, x, y, loss="mse")
    a = E.reduce_channels(acts, model.channel_groups, 4)
    g = E.reduce_channels(grads, model.channel_groups, 4)
    A, G = E.pair_observations(a, g)
    W = E.edge_evidence(A, G)
    np.testing.assert_allclose(W.numpy(), spearman_block_ref(A.numpy(), G.numpy()), atol=1e-5)
    res = E.mrr(W, model.edge_index)
    assert res["n_queries"] == 4 and 0 < res["mrr"] <= 1 and math.isfinite(res["random_mrr"])


def test_example_recipe_writes_loadable_files(tmp_path):
    from fadiag.examples import train_gsnn

    train_gsnn.main(["--out", str(tmp_path), "--epochs", "1", "--n-train", "256", "--n-eval", "64",
                     "--no-control"])
    import yaml

    spec = yaml.safe_load((tmp_path / "gsnn.yaml").read_text())
    model = GSNN(**spec["model"]["args"])
    model.load_state_dict(torch.load(tmp_path / "gsnn.pt", weights_only=True))
    data = np.load(tmp_path / "gsnn_data.npz", allow_pickle=False)
    assert data["x"].shape == (64, spec["model"]["args"]["in_dim"]) and data["y"].dtype == np.float32
    lines = (tmp_path / "gsnn_truth.tsv").read_text().splitlines()
    assert lines[0] == "source\ttarget" and len(lines) - 1 == len(spec["model"]["args"]["edges"])
    assert "MRR" in (tmp_path / "PROVENANCE.md").read_text()
