"""The relevance Jacobian in closed form (fadiag.diagnostics.relevance.mlp_jacobian, issue 25) equals the autograd
Jacobian of the model itself, at the model's precision, for every trunk option a MultiHeadLearner has."""

from __future__ import annotations

import pytest
import torch

from _tol import tol
from fadiag.diagnostics.relevance import mlp_jacobian, sensitivity
from fadiag.models.multihead import MultiHeadLearner


def _learner(dtype, **kw):
    torch.manual_seed(3)
    m = MultiHeadLearner(n_features=kw.pop("n_features", 6), **kw)
    for p in m.parameters():  # weights big enough that LayerNorm and the LeakyReLU's kink both matter
        p.data.normal_(0.0, 0.8)
    if m.normalize:
        m.update_normalizer(torch.randn(200, m.n_features) * torch.logspace(-1, 1, m.n_features) + 0.5)
    return m.to(dtype)


CASES = [dict(hidden=(64, 64), n_heads=5, n_features=12),
         dict(hidden=(7, 5, 4), n_heads=3),
         dict(hidden=(6,), n_heads=2, use_layer_norm=False, leaky_relu_slope=0.2),
         dict(hidden=(5, 5), n_heads=2, normalize=False, layer_norm_eps=1e-3),
         dict(hidden=(), n_heads=4)]


@pytest.mark.parametrize("kw", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_closed_form_equals_the_autograd_jacobian(kw, dtype):
    m = _learner(dtype, **kw)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = (torch.randn(m.n_features, generator=g) * 3).to(dtype)
        got = sensitivity(m, x)
        want = torch.autograd.functional.jacobian(lambda v: m(v[None])[0], x)
        assert got.dtype == dtype and got.shape == (m.n_heads, m.n_features)
        torch.testing.assert_close(got, want, **tol(str(dtype)))
    if m.hidden:  # the point is not in a linear region: some units are on the LeakyReLU's negative side
        h = m.normalized(x[None])
        for layer in m.trunk:
            h = torch.nn.functional.layer_norm(layer(h), (layer.out_features,)) if m.use_layer_norm else layer(h)
            assert bool((h < 0).any()) and bool((h > 0).any())
            h = torch.nn.functional.leaky_relu(h, m.leaky_relu_slope)


def test_closed_form_in_float64_is_exact_for_a_float64_model():
    m = _learner(torch.float64, hidden=(8, 8), n_heads=3)
    x = torch.randn(6, dtype=torch.float64)
    want = torch.func.jacrev(lambda v: m(v[None])[0])(x).detach()
    torch.testing.assert_close(torch.from_numpy(mlp_jacobian(m, x.numpy())), want, **tol("float64"))


def test_other_models_keep_reverse_mode():
    class Sub(MultiHeadLearner):  # a subclass may change forward: never the closed form
        def forward(self, x_raw):
            return super().forward(x_raw) * 2.0

    torch.manual_seed(0)
    m = Sub(n_features=4, hidden=(5,), n_heads=2).double()
    base = MultiHeadLearner(n_features=4, hidden=(5,), n_heads=2).double()
    base.load_state_dict(m.state_dict())
    x = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(sensitivity(m, x), 2.0 * sensitivity(base, x), **tol("float64"))
