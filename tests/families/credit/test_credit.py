"""Per-layer credit metrics (fadiag.diagnostics.credit) against slow, obviously-correct references.

References are Python loops over samples / directions in float64 (math module), scipy for Pearson,
and torch.autograd for gradients, on a tiny seeded pre-LN residual MLP written here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fadiag.diagnostics import credit as C
from fadiag.diagnostics import credit_toy as T
from fadiag.diagnostics import drift as D

F64 = torch.float64


# ------------------------------------------------------------------------------------------------
# tiny seeded model: h -> h + block(h) (pre-LN), head(out_ln(h_L)), CE reduction="none"
# ------------------------------------------------------------------------------------------------


class TinyResMLP(torch.nn.Module):
    def __init__(self, in_dim=5, width=8, depth=3, n_classes=4):
        super().__init__()
        self.embed = torch.nn.Linear(in_dim, width)
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, 2 * width),
                                torch.nn.GELU(), torch.nn.Linear(2 * width, width))
            for _ in range(depth)
        )
        self.out_ln = torch.nn.LayerNorm(width)
        self.out_head = torch.nn.Linear(width, n_classes)

    def hiddens(self, x):
        hs = [self.embed(x)]
        for blk in self.blocks:
            hs.append(hs[-1] + blk(hs[-1]))
        return hs

    def forward_from(self, l, h):
        for blk in self.blocks[l:]:
            h = h + blk(h)
        return self.out_head(self.out_ln(h))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = TinyResMLP().to(F64).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 5, generator=gen, dtype=F64)
    y = torch.randint(0, 4, (32,), generator=gen)
    with torch.no_grad():
        hs = model.hiddens(x)
    return model, x, y, hs


def make_forward_fn(model, l, y):
    """forward_fn for layer l: (N, d) -> (N,) CE; N may be a multiple of the batch (labels tiled)."""

    def fn(h):
        reps = h.shape[0] // y.shape[0]
        logits = model.forward_from(l, h.to(F64))
        return F.cross_entropy(logits, y.repeat(reps), reduction="none")

    return fn


def bp_grad(model, l, h, y):
    """g_l = d(Σ_b CE_b)/dh_l via autograd (per-sample loss summed, docs/science.md §2)."""
    h = h.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model.forward_from(l, h), y, reduction="none").sum()
    (g,) = torch.autograd.grad(loss, h)
    return g


def loop_cosine(a, g):
    out = []
    for ab, gb in zip(a.tolist(), g.tolist()):
        dot = sum(p * q for p, q in zip(ab, gb))
        na = math.sqrt(sum(p * p for p in ab))
        ng = math.sqrt(sum(q * q for q in gb))
        out.append(dot / (na * ng) if na > 0 and ng > 0 else math.nan)
    return out


# ------------------------------------------------------------------------------------------------
# norms and cosines
# ------------------------------------------------------------------------------------------------


def test_row_norms_is_per_row_l2_not_p_minus_one():
    x = torch.tensor([[3.0, 4.0], [1.0, 1.0], [0.0, 0.0]])
    got = C.row_norms(x)
    assert got.dtype == F64 and got.shape == (3,)
    assert got.tolist() == pytest.approx([5.0, math.sqrt(2), 0.0], abs=1e-15)
    # the pitfall it guards against: x.norm(-1) is a single scalar, not (B,)
    assert x.norm(-1).dim() == 0


def test_per_sample_cosine_matches_loop(tiny):
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(16, 9, generator=gen, dtype=F64)
    g = torch.randn(16, 9, generator=gen, dtype=F64) + 0.5 * a
    got = C.per_sample_cosine(a, g)
    assert got.tolist() == pytest.approx(loop_cosine(a, g), abs=1e-14)
    assert got.mean() > 0.3  # correlated by construction: a wrong sign/normalisation fails


def test_tiny_norm_cosine_exact_where_torch_is_100x_off():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(8, 16, generator=gen, dtype=F64)
    g = a + torch.randn(8, 16, generator=gen, dtype=F64)
    a = a / a.norm(dim=-1, keepdim=True)              # ‖a‖ = 1
    g = 1e-10 * g / g.norm(dim=-1, keepdim=True)      # ‖g‖ = 1e-10 (the DFA regime)
    exact = torch.tensor(loop_cosine(a, g), dtype=F64)
    ours = C.per_sample_cosine(a, g)
    torch_cos = F.cosine_similarity(a, g, dim=-1)
    assert torch.allclose(ours, exact, rtol=1e-12, atol=0)
    ratio = exact / torch_cos
    assert bool(((ratio > 90) & (ratio < 110)).all()), ratio  # eps = 1e-8 clamp: ~100x shrink
    res = C.offline_bp_cosine(a, g)
    assert res["gamma"] == pytest.approx(float(exact.mean()), rel=1e-12)
    assert res["g_norm"] == pytest.approx(1e-10, rel=1e-12)
    assert res["interpretable"] is False  # ‖g‖ below the 1e-7 floor


def test_zero_row_cosine_is_nan_and_excluded():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, -1.0]])
    cos = C.per_sample_cosine(a, g)
    assert cos[0] == 1.0 and math.isnan(cos[1]) and abs(float(cos[2])) < 1e-15
    res = C.offline_bp_cosine(a, g)
    assert res["gamma"] == pytest.approx(0.5)  # mean of 1 and 0; the undefined row is not a 0
    assert res["n_undefined"] == 1 and res["n_samples"] == 3
    all_zero = C.offline_bp_cosine(torch.zeros(2, 3), torch.ones(2, 3))
    assert math.isnan(all_zero["gamma"]) and all_zero["interpretable"] is False


def test_offline_bp_cosine_norms_and_floor():
    a = torch.tensor([[2.0, 0.0], [0.0, 3.0], [4.0, 0.0]], dtype=F64)
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 5.0]], dtype=F64)
    res = C.offline_bp_cosine(a, g)
    assert res["gamma"] == pytest.approx(2 / 3)
    assert res["a_norm"] == 3.0 and res["g_norm"] == 1.0
    assert res["interpretable"] is True
    assert C.offline_bp_cosine(a, g * 1e-8)["interpretable"] is False
    assert C.offline_bp_cosine(a, g * 1e-8, floor=1e-9)["interpretable"] is True


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_inputs_never_pass(bad):
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(4, 6, generator=gen, dtype=F64)
    g = a.clone()  # cosine 1 everywhere: a tempting "passing" number
    g[1, 2] = bad
    cos = C.per_sample_cosine(a, g)
    assert math.isnan(cos[1]) and torch.allclose(cos[[0, 2, 3]], torch.ones(3, dtype=F64))
    res = C.offline_bp_cosine(a, g)
    assert res["interpretable"] is False and res["nonfinite_inputs"] is True
    a2 = a.clone()
    a2[0, 0] = bad
    assert C.offline_bp_cosine(a2, a)["interpretable"] is False


def test_fp16_inputs_are_computed_in_float64():
    gen = torch.Generator().manual_seed(5)
    a = (300 * torch.randn(4, 32, generator=gen)).half()
    g = (300 * torch.randn(4, 32, generator=gen)).half() + a
    assert not torch.isfinite((a * g).sum(-1)).all()  # an fp16 dot product overflows (> 65504)
    got = C.per_sample_cosine(a, g)
    assert got.dtype == F64
    assert got.tolist() == pytest.approx(loop_cosine(a.double(), g.double()), abs=1e-13)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(-100, 100), seed=st.integers(0, 2**16))
def test_cosine_is_scale_invariant(k, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(3, 7, generator=gen, dtype=F64)
    g = torch.randn(3, 7, generator=gen, dtype=F64)
    assert torch.allclose(C.per_sample_cosine(a * 10.0**k, g), C.per_sample_cosine(a, g),
                          rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# perturbation correlation
# ------------------------------------------------------------------------------------------------


def test_perturbation_correlation_matches_loop_reference(tiny):
    model, _, y, hs = tiny
    l, M, eps = 1, 6, 1e-3
    h = hs[l]
    fn = make_forward_fn(model, l, y)
    a = bp_grad(model, l, h, y) + torch.randn(h.shape, generator=torch.Generator().manual_seed(6), dtype=F64)
    z = torch.randn(M, *h.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    got = C.perturbation_correlation(h, a, fn, eps=eps, directions=z)
    pred, true = [], []
    for m in range(M):
        for b in range(h.shape[0]):
            zb = z[m, b].tolist()
            nz = math.sqrt(sum(v * v for v in zb))
            v = [eps * q / (nz + 1e-8) for q in zb]
            pred.append(sum(p * q for p, q in zip(a[b].tolist(), v)))
            hb = h[b : b + 1]
            yb = y[b : b + 1]
            l1 = F.cross_entropy(model.forward_from(l, hb + torch.tensor([v], dtype=F64)), yb).item()
            l0 = F.cross_entropy(model.forward_from(l, hb), yb).item()
            true.append(l1 - l0)
    ref = stats.pearsonr(np.array(pred), np.array(true)).statistic
    assert got == pytest.approx(ref, abs=1e-9)
    assert 0.2 < got < 0.99  # a noisy gradient: neither perfect nor uncorrelated


def test_perturbation_correlation_bp_gradient_high_random_low(tiny):
    model, _, y, hs = tiny
    l = 1
    h = hs[l]
    fn = make_forward_fn(model, l, y)
    g = bp_grad(model, l, h, y)
    rho_bp = C.perturbation_correlation(h, g, fn, n_dirs=64, generator=torch.Generator().manual_seed(8))
    assert rho_bp >= 0.99
    a_rand = torch.randn(h.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    rho_rand = C.perturbation_correlation(h, a_rand, fn, n_dirs=64,
                                          generator=torch.Generator().manual_seed(8))
    assert abs(rho_rand) < 0.2


def test_perturbation_correlation_batched_equals_sequential(tiny):
    model, _, y, hs = tiny
    l = 2
    h = hs[l]
    fn = make_forward_fn(model, l, y)
    a = torch.randn(h.shape, generator=torch.Generator().manual_seed(10), dtype=F64) + bp_grad(model, l, h, y)
    calls = []

    def counting(x):
        calls.append(x.shape[0])
        return fn(x)

    r1 = C.perturbation_correlation(h, a, counting, n_dirs=16, generator=torch.Generator().manual_seed(11))
    assert calls == [32, 16 * 32]  # the base loss, then ONE batched call for all M directions
    calls.clear()
    r2 = C.perturbation_correlation_sequential(h, a, counting, n_dirs=16,
                                               generator=torch.Generator().manual_seed(11))
    assert calls == [32] * 17
    assert r1 == pytest.approx(r2, abs=1e-10)
    r3 = C.perturbation_correlation(h, a, fn, n_dirs=16, generator=torch.Generator().manual_seed(12))
    assert abs(r3 - r1) > 1e-6  # the seed matters: the directions are really random


def test_perturbation_correlation_zero_std_gives_zero_and_nan_propagates(tiny):
    model, _, y, hs = tiny
    h = hs[1]
    fn = make_forward_fn(model, 1, y)
    assert C.perturbation_correlation(h, torch.zeros_like(h), fn, n_dirs=4) == 0.0
    const = lambda x: torch.ones(x.shape[0], dtype=F64)  # noqa: E731  loss does not move
    assert C.perturbation_correlation(h, torch.ones_like(h), const, n_dirs=4) == 0.0
    nan_loss = lambda x: torch.full((x.shape[0],), math.nan, dtype=F64)  # noqa: E731
    assert math.isnan(C.perturbation_correlation(h, torch.ones_like(h), nan_loss, n_dirs=4))
    a = torch.ones_like(h)
    a[0, 0] = math.nan
    assert math.isnan(C.perturbation_correlation(h, a, fn, n_dirs=4))


def test_perturbation_correlation_fp16_h_uses_applied_perturbation(tiny):
    model, _, y, hs = tiny
    l = 1
    h16 = hs[l].half()
    g = bp_grad(model, l, h16.double(), y)
    fn = make_forward_fn(model, l, y)  # upcasts to float64 internally
    seen = []

    def spy(x):
        seen.append(x.dtype)
        return fn(x)

    rho = C.perturbation_correlation(h16, g, spy, n_dirs=64, generator=torch.Generator().manual_seed(13))
    assert seen == [torch.float16, torch.float16]  # called in the model dtype
    # eps·v ~ 3e-4 per entry is below fp16 spacing (~1e-3 at |h| ~ 1): only the applied (rounded) δ
    # predicts Δ this well (the nominal eps·v gives ≈ 0.97 here)
    assert rho > 0.999


def test_perturbation_correlation_rejects_bad_shapes(tiny):
    model, _, y, hs = tiny
    fn = make_forward_fn(model, 1, y)
    with pytest.raises(ValueError):
        C.perturbation_correlation(hs[1], hs[1][:, :3], fn)
    with pytest.raises(ValueError):
        C.perturbation_correlation(hs[1], hs[1], lambda x: torch.zeros(x.shape[0], 2))


# ------------------------------------------------------------------------------------------------
# nudging
# ------------------------------------------------------------------------------------------------


def test_nudging_matches_loop_and_signs(tiny):
    model, _, y, hs = tiny
    l = 1
    h = hs[l]
    fn = make_forward_fn(model, l, y)
    g = bp_grad(model, l, h, y)
    for a, eta in [(g, 0.01), (-g, 0.05)]:
        ref = []
        for b in range(h.shape[0]):
            ab = a[b].tolist()
            rms = math.sqrt(sum(v * v for v in ab) / len(ab))
            hn = torch.tensor([[hv - eta * av / (rms + 1e-6) for hv, av in zip(h[b].tolist(), ab)]],
                              dtype=F64)
            l1 = F.cross_entropy(model.forward_from(l, hn), y[b : b + 1]).item()
            l0 = F.cross_entropy(model.forward_from(l, h[b : b + 1]), y[b : b + 1]).item()
            ref.append(l1 - l0)
        assert C.nudging_delta(h, a, fn, eta=eta) == pytest.approx(sum(ref) / len(ref), abs=1e-12)
    assert C.nudging_delta(h, g, fn) < 0 < C.nudging_delta(h, -g, fn)
    many = C.nudging_delta(h, g, fn, eta=[0.01, 0.05])
    assert set(many) == {0.01, 0.05}
    assert many[0.05] == pytest.approx(C.nudging_delta(h, g, fn, eta=0.05), abs=1e-14)
    assert many[0.05] < many[0.01] < 0


# ------------------------------------------------------------------------------------------------
# bridge residual
# ------------------------------------------------------------------------------------------------


def test_bridge_residual_matches_loop():
    gen = torch.Generator().manual_seed(14)
    B, d, dn, K, lam, sigma = 5, 4, 3, 8, 0.1, 0.1
    h_l = torch.randn(B, d, generator=gen, dtype=F64)
    h_next = torch.randn(B, dn, generator=gen, dtype=F64)
    wv = torch.randn(d, generator=gen, dtype=F64)
    wt = torch.randn(dn, generator=gen, dtype=F64)
    value_fn = lambda h: torch.tanh(h @ wv)  # noqa: E731
    target_fn = lambda h: (h @ wt) ** 2 / dn  # noqa: E731
    xi = torch.randn(K, B, dn, generator=gen, dtype=F64)
    got = C.bridge_residual(h_l, h_next, value_fn, target_fn, K=K, lam=lam, sigma=sigma, noise=xi)
    total = 0.0
    for b in range(B):
        v = math.tanh(sum(p * q for p, q in zip(h_l[b].tolist(), wv.tolist())))
        s = 0.0
        for k in range(K):
            hk = [p + sigma * q for p, q in zip(h_next[b].tolist(), xi[k, b].tolist())]
            vbar = sum(p * q for p, q in zip(hk, wt.tolist())) ** 2 / dn
            s += math.exp(-vbar / lam)
        target = -lam * math.log(s / K)
        total += abs(v - target)
    assert got == pytest.approx(total / B, abs=1e-12)
    # seeded draws are reproducible, and a consistent value function scores 0
    r1 = C.bridge_residual(h_l, h_next, value_fn, target_fn, generator=torch.Generator().manual_seed(1))
    r2 = C.bridge_residual(h_l, h_next, value_fn, target_fn, generator=torch.Generator().manual_seed(1))
    assert r1 == r2
    const = lambda h: torch.full((h.shape[0],), 0.7, dtype=F64)  # noqa: E731
    assert C.bridge_residual(h_l, h_next, const, const) == pytest.approx(0.0, abs=1e-14)


def test_bridge_residual_batches_the_k_states():
    calls = []

    def target_fn(h):
        calls.append(h.shape[0])
        return h.sum(-1)

    C.bridge_residual(torch.zeros(6, 2), torch.zeros(6, 3), lambda h: h.sum(-1), target_fn, K=8)
    assert calls == [48]


# ------------------------------------------------------------------------------------------------
# feature drift
# ------------------------------------------------------------------------------------------------


def test_feature_drift_matches_loop_and_zero_init():
    gen = torch.Generator().manual_seed(15)
    init = {"blocks.0.w": torch.randn(3, 4, generator=gen), "blocks.0.b": torch.zeros(4),
            "blocks.1.w": torch.randn(4, generator=gen), "head.w": torch.randn(2, 2, generator=gen),
            "old": torch.ones(1)}
    final = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in init.items() if k != "old"}
    final["new"] = torch.ones(2)
    res = D.feature_drift(final, init)
    for k in ["blocks.0.w", "blocks.1.w", "head.w"]:
        f, i = final[k].double().flatten().tolist(), init[k].double().flatten().tolist()
        ref = math.sqrt(sum((p - q) ** 2 for p, q in zip(f, i))) / math.sqrt(sum(q * q for q in i))
        assert res.drift[k] == pytest.approx(ref, rel=1e-12)
    assert res.drift["blocks.0.b"] is None  # ‖W_init‖ = 0: undefined, not inf or 0
    assert res.only_in_final == ("new",) and res.only_in_init == ("old",)
    assert set(res.drift) == {"blocks.0.w", "blocks.0.b", "blocks.1.w", "head.w"}

    def layer_of(name):
        return int(name.split(".")[1]) if name.startswith("blocks.") else None

    per = D.drift_per_layer(res, layer_of)
    assert list(per) == [0, 1]
    d0 = math.sqrt(sum(((final[k] - init[k]).double() ** 2).sum().item() for k in ["blocks.0.w", "blocks.0.b"]))
    n0 = math.sqrt((init["blocks.0.w"].double() ** 2).sum().item())
    assert per[0] == pytest.approx(d0 / n0, rel=1e-12)
    assert per[1] == pytest.approx(res.drift["blocks.1.w"], rel=1e-12)
    zero_layer = D.drift_per_layer(D.feature_drift({"blocks.0.b": torch.ones(2)},
                                                   {"blocks.0.b": torch.zeros(2)}), layer_of)
    assert zero_layer == {0: None}


def test_feature_drift_shape_mismatch_raises():
    with pytest.raises(ValueError, match="w"):
        D.feature_drift({"w": torch.zeros(2, 3)}, {"w": torch.zeros(3, 2)})


# ------------------------------------------------------------------------------------------------
# credit signals
# ------------------------------------------------------------------------------------------------


def test_dfa_signals_values_shapes_and_layouts():
    gen = torch.Generator().manual_seed(16)
    B, Cn = 6, 3
    logits = torch.randn(B, Cn, generator=gen)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    Bs = [torch.randn(Cn, 5, generator=gen), torch.randn(Cn, 7, generator=gen)]
    sig = C.dfa_signals(logits, y, Bs)
    assert [tuple(s.shape) for s in sig] == [(6, 5), (6, 7)] and sig[0].dtype == F64
    for l, Bm in enumerate(Bs):
        for b in range(B):
            z = logits[b].double().tolist()
            mx = max(z)
            ex = [math.exp(v - mx) for v in z]
            e = [v / sum(ex) - (1.0 if c == int(y[b]) else 0.0) for c, v in enumerate(ex)]
            for j in range(Bm.shape[1]):
                ref = sum(e[c] * float(Bm[c, j]) for c in range(Cn))
                assert float(sig[l][b, j]) == pytest.approx(ref, abs=1e-12)
    sig_t = C.dfa_signals(logits, y, [Bm.T for Bm in Bs])  # (d, C) accepted when unambiguous
    assert all(torch.allclose(p, q, atol=1e-15) for p, q in zip(sig, sig_t))
    square = torch.randn(Cn, Cn, generator=gen)
    with pytest.raises(ValueError, match="ambiguous"):
        C.dfa_signals(logits, y, [square])
    s1 = C.dfa_signals(logits, y, [square], layout="classes_first")[0]
    s2 = C.dfa_signals(logits, y, [square.T], layout="classes_last")[0]
    assert torch.allclose(s1, s2)
    with pytest.raises(ValueError):
        C.dfa_signals(logits, y, [torch.randn(4, 5)])  # no dimension equals n_classes
    with pytest.raises(ValueError):
        C.dfa_signals(logits, y, [])  # missing feedback is an error, never a fallback
    with pytest.raises(ValueError):
        C.dfa_signals(logits, torch.tensor([0, 1, 2, 3, 0, 0]), Bs)  # label out of range


def test_fa_signals_chain_and_equals_bp_with_true_jacobians():
    toy = T.lq_make(d=6, L=3, seed=1)
    h0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=F64)
    hs = T.lq_forward(toy.Ws, h0)
    lam = T.lq_costates(toy.Ws, hs[-1], toy.Q, toy.t)
    eye = torch.eye(6, dtype=F64)
    fa = C.fa_signals(lam[-1], [(eye + W).T for W in toy.Ws])  # B_l = (dh_{l+1}/dh_l)^T
    assert len(fa) == 4 and all(torch.allclose(p, q, atol=1e-12) for p, q in zip(fa, lam))
    Bs = [torch.randn(5, 6, dtype=F64), torch.randn(6, 3, dtype=F64)]
    top = torch.randn(2, 3, dtype=F64)
    sig = C.fa_signals(top, Bs)
    assert [tuple(s.shape) for s in sig] == [(2, 5), (2, 6), (2, 3)]
    assert torch.allclose(sig[0][1], Bs[0] @ (Bs[1] @ top[1]))  # a_l = B_l a_{l+1} per sample
    with pytest.raises(ValueError):
        C.fa_signals(top, [torch.randn(6, 4, dtype=F64)])


# ------------------------------------------------------------------------------------------------
# aggregation
# ------------------------------------------------------------------------------------------------


def test_layer_means_skips_and_counts_undefined():
    res = C.layer_means([0.43, 0.0, math.nan, None, 0.02])
    assert res["all_layers"] == pytest.approx((0.43 + 0.0 + 0.02) / 3)
    assert res["deep_only"] == pytest.approx(0.01)
    assert res["n_skipped_all"] == 2 and res["n_skipped_deep"] == 2 and res["n_layers"] == 5
    assert res["aggregation"] == "mean over layers of per-layer batch means"
    assert res["per_layer"][0] == 0.43 and res["per_layer"][3] is None
    only0 = C.layer_means([0.5, None])
    assert only0["all_layers"] == 0.5 and math.isnan(only0["deep_only"])


# ------------------------------------------------------------------------------------------------
# toy linear-quadratic system
# ------------------------------------------------------------------------------------------------


def test_lq_costates_equal_autograd():
    toy = T.lq_make(d=8, L=5, seed=3, scale=0.3)
    Q = torch.randn(8, 8, generator=torch.Generator().manual_seed(4), dtype=F64)  # non-symmetric too
    for Qm in (toy.Q, Q):
        h0 = torch.randn(7, 8, generator=torch.Generator().manual_seed(5), dtype=F64).requires_grad_(True)
        hs = T.lq_forward(toy.Ws, h0)
        grads = torch.autograd.grad(T.lq_loss(hs[-1], Qm, toy.t).sum(), hs)
        lam = T.lq_costates(toy.Ws, hs[-1], Qm, toy.t)
        assert len(lam) == 6
        for g, lm in zip(grads, lam):
            assert torch.allclose(lm, g, atol=1e-10, rtol=0)
        assert float((lam[0] - lam[-1]).abs().max()) > 1e-2  # the recursion really moves λ


def test_run_toy_lq_bp_one_dfa_zero():
    res = T.run_toy_lq(d=16, L=6, B=64, seed=0)
    assert len(res["bp"]) == 7 and len(res["dfa"]) == 7
    assert min(res["bp"]) > 0.999
    assert abs(C.layer_means(res["dfa"])["all_layers"]) < 0.2
    # a costate cosine of the costates with themselves, negated, is -1 (sign is kept)
    toy = T.lq_make(4, 2, seed=0)
    hs = T.lq_forward(toy.Ws, torch.randn(3, 4, dtype=F64))
    lam = T.lq_costates(toy.Ws, hs[-1], toy.Q, toy.t)
    assert T.lq_costate_cosine([-x for x in lam], lam) == pytest.approx([-1.0] * 3)
