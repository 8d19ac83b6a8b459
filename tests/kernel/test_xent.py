"""fadiag.stream.xent: the float32-cost cross-entropy against a float64 reference written without cancellation
(log1p of the other classes' exp(z_j - z_y)), on random, saturated, huge-logit, tied and ignored rows; and
against F.cross_entropy in float64 where that one is itself exact (no saturation)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from _tol import tol
from fadiag.stream.xent import cross_entropy_rows


def _reference(z: torch.Tensor, y: torch.Tensor) -> tuple:
    """(loss (N,), d loss / d z (N, V)) in float64, one row at a time: a_j = z_j - z_y; loss = log(1 + sum_{j!=y}
    exp(a_j)) when y is the arg-max (log1p, no cancellation), else max(a) + log(sum exp(a - max(a)))."""
    z = z.double()
    loss = torch.zeros(z.shape[0], dtype=torch.float64)
    grad = torch.zeros_like(z)
    for i in range(z.shape[0]):
        if int(y[i]) == -100:
            continue
        k = int(y[i])
        a = z[i] - z[i, k]
        others = torch.cat([a[:k], a[k + 1:]])
        mx = float(a.max())
        if mx <= 0:
            li = math.log1p(float(torch.exp(others).sum()))
        else:
            li = mx + math.log(float(torch.exp(a - mx).sum()))
        loss[i] = li
        p = torch.exp(a - li)  # p_j = exp(z_j - z_y - loss)
        grad[i] = p
        grad[i, k] = -float(torch.cat([p[:k], p[k + 1:]]).sum())
    return loss, grad


def _case(kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, v = 40, 30
    z = torch.randn(n, v, generator=g)
    y = torch.randint(0, v, (n,), generator=g)
    if kind == "saturated":  # the label far above every other class: float32 F.cross_entropy gives 0
        z[:, 7] += torch.linspace(15.0, 36.0, n)
        y[:] = 7
    elif kind == "huge":  # logits of magnitude 1e4: log-sum-exp as max + log(sum) rounds at 1e-3
        z = z * 3.0 + 1e4
    elif kind == "ties":
        z[:, :4] = 5.0
        y[:] = torch.arange(n) % 6
    y[3] = -100
    return z, y


@pytest.mark.parametrize("kind", ["random", "saturated", "huge", "ties"])
def test_loss_and_gradient_equal_the_float64_reference(kind):
    z, y = _case(kind)
    zz = z.clone().requires_grad_(True)
    got = cross_entropy_rows(zz, y)
    (g,) = torch.autograd.grad(got.sum(), zz)
    want, gwant = _reference(z, y)
    assert got.dtype == torch.float64 and g.dtype == torch.float32
    torch.testing.assert_close(got.detach(), want, **tol("float32", atol=0))
    # each row's gradient to float32 precision of that row's own scale (saturated rows are ~1e-7..1e-16)
    scale = gwant.abs().amax(1, keepdim=True).clamp(min=1e-300)
    torch.testing.assert_close(g.double() / scale, gwant / scale, **tol("float32"))
    assert float(got[3].detach()) == 0.0 and float(g[3].abs().max()) == 0.0  # label -100: no loss, no gradient


def test_plain_float32_loses_the_saturated_rows():
    """The reason for the module: F.cross_entropy on float32 logits rounds saturated rows' loss to 0."""
    z, y = _case("saturated")
    plain = F.cross_entropy(z, y, reduction="none", ignore_index=-100)
    want, _ = _reference(z, y)
    assert float(plain[-1]) == 0.0 and float(want[-1]) > 0.0


def test_equals_float64_cross_entropy_with_row_weights():
    """Unsaturated rows: the same as F.cross_entropy on float64 logits, under unequal row weights."""
    z, y = _case("random", seed=3)
    zz = z.clone().requires_grad_(True)
    got = cross_entropy_rows(zz, y)
    (g,) = torch.autograd.grad((got * torch.linspace(0.5, 2.0, len(y), dtype=torch.float64)).sum(), zz)
    z64 = z.double().requires_grad_(True)
    want = F.cross_entropy(z64, y, reduction="none", ignore_index=-100)
    (gw,) = torch.autograd.grad((want * torch.linspace(0.5, 2.0, len(y), dtype=torch.float64)).sum(), z64)
    torch.testing.assert_close(got.detach(), want.detach(), **tol("float32"))
    torch.testing.assert_close(g.double(), gw, **tol("float32"))


def test_backward_twice_is_refused():
    z, y = _case("random")
    zz = z.clone().requires_grad_(True)
    loss = cross_entropy_rows(zz, y).sum()
    torch.autograd.grad(loss, zz, retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        torch.autograd.grad(loss, zz)


def test_float64_logits_keep_torch_cross_entropy():
    z, y = _case("random")
    z = z.double()
    torch.testing.assert_close(cross_entropy_rows(z, y), F.cross_entropy(z, y, reduction="none", ignore_index=-100),
                               rtol=0, atol=0)


def test_nonfinite_logits_give_nonfinite_loss():
    z, y = _case("random")
    z[0, 0] = float("nan")
    z[1, 2] = float("inf")
    got = cross_entropy_rows(z, y)
    assert not math.isfinite(float(got[0])) and not math.isfinite(float(got[1]))
    assert bool(torch.isfinite(got[4:]).all())
