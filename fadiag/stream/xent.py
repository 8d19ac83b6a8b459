"""Per-row cross-entropy at float32 cost with float64-grade values and gradients (docs/science.md, "Loss").

``F.cross_entropy`` on float32 logits loses the loss and its gradient on saturated rows: with the label the
arg-max and every other class far below it, p_y rounds to 1, so the loss rounds to 0 and the label's gradient
entry p_y - 1 to 0 (its true value is minus the sum of the other probabilities). Upcasting the logits to float64
fixes that at the price of three (rows, classes) float64 tensors (for a 50 257-token vocabulary and 8 x 128
tokens, ~1.2 GB a batch). :class:`CrossEntropyRows` instead writes the loss without cancellation:

    m = max_j z_j,   e_j = exp(z_j - m),   t = sum_{j != y} e_j
    loss = (m - z_y) + log1p(t + e_y - 1)               (= log(t + e_y) - (z_y - m); log1p(t) when e_y = 1)
    d loss / d z_j = e_j / (t + e_y)  (j != y),   d loss / d z_y = -t / (t + e_y)

m - z_y is exact in float64, t has no cancellation, and when y is the arg-max e_y = 1 exactly, so the loss is
log1p(t) and the label's gradient -t / (1 + t): both to a few float32 ulps however saturated the row. Memory:
one (rows, classes) buffer of the logits' dtype, kept from the forward and turned into the gradient in place by
the backward (F.cross_entropy keeps its log-softmax and makes two more such tensors in its backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class CrossEntropyRows(torch.autograd.Function):
    """(N,) float64 cross-entropy of float32 logits z (N, V) and labels y (N,); label -100 rows give 0 and no
    gradient. The forward's exp buffer becomes the gradient in place, so the backward runs once (no
    retain_graph, no double backward)."""

    @staticmethod
    def forward(ctx, z, y):
        keep = y != -100
        yy = torch.where(keep, y, torch.zeros_like(y))[:, None]
        m = z.amax(1, keepdim=True)
        e = z - m
        e.exp_()  # e_j = exp(z_j - m)
        e64 = e.gather(1, yy).squeeze(1).double()
        e.scatter_(1, yy, 0.0)
        t = e.sum(1).double()  # sum over j != y: no cancellation (a float64-accumulated sum costs 20x more)
        s1 = torch.where(e64 == 1.0, t, (t - 1.0) + e64)  # t + e_y - 1, exact when y is the arg-max (e_y = 1)
        zy = z.gather(1, yy).squeeze(1)
        loss = (m.squeeze(1).double() - zy.double()) + torch.log1p(s1)
        ctx.save_for_backward(e, yy, keep, t, e64)
        ctx.spent = False
        return torch.where(keep, loss, torch.zeros_like(loss))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        if ctx.spent:
            raise RuntimeError("CrossEntropyRows: backward runs once (its buffer became the gradient)")
        ctx.spent = True
        e, yy, keep, t, e64 = ctx.saved_tensors
        scale = torch.where(keep, g / (t + e64), torch.zeros_like(t))  # float64 (N,)
        e.scatter_(1, yy, (-t)[:, None].to(e.dtype))  # d/dz_y = -t / s; d/dz_j = e_j / s
        e.mul_(scale.to(e.dtype)[:, None])
        return e, None


def cross_entropy_rows(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) float64 per-row cross-entropy of logits (N, V) and integer labels (N,) (-100: ignored, loss 0).
    float64 logits go through ``F.cross_entropy`` as they are; float32 (and half, upcast to float32) through
    :class:`CrossEntropyRows`, which is as accurate at float32 cost (module docstring)."""
    if z.dtype == torch.float64 or z.shape[0] == 0:
        return F.cross_entropy(z.double(), y, reduction="none", ignore_index=-100)
    if z.dtype != torch.float32:
        z = z.float()
    return CrossEntropyRows.apply(z, y)
