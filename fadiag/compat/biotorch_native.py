"""The library's own credit signal (``--signal native``): BioTorch's FA / DFA backward, rebuilt on a BP twin.

:func:`native_backward` patches the feedback layers of a plain model (the BP twin of
:func:`fadiag.compat.biotorch.bp_twin_module`, or one built from the BP-twin state dict) for the duration
of a ``with`` block so that autograd computes what BioTorch's layers compute:

- FA family, Linear: ``grad_in = grad_out @ B``; Conv2d: the transposed convolution of ``grad_out`` with B.
- DFA, Linear: ``grad_in = e @ B``; Conv2d: the transposed convolution of ``e`` broadcast over the output's
  positions with the (C, in_channels, kh, kw) kernel B; e = d(loss)/d(model output), read by a hook on the
  model's output when the backward starts (BioTorch's ``BioModule`` computes it with ``autograd.grad``).

Weight and bias gradients stay ``grad_out^T x`` / ``sum grad_out`` as in BioTorch. The forward is the plain
layer's; the gradient at any tensor (h_l as fadiag's stream view captures it) is the native a_l, in the
scale of the caller's loss (fadiag's summed per-sample CE gives e = softmax - onehot; BioTorch's mean CE
gives e / B). ``B`` comes from :func:`fadiag.compat.biotorch.effective_feedback`.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..errors import InputError


def _conv_input_grad(x_shape, B, g, conv):
    return torch.nn.grad.conv2d_input(x_shape, B, g, stride=conv.stride, padding=conv.padding,
                                      dilation=conv.dilation, groups=conv.groups)


class _Feedback(torch.autograd.Function):
    """y = layer(x, W, b) forward; backward: the input's gradient through ``B`` (FA) or from ``e`` (DFA)."""

    @staticmethod
    def forward(ctx, x, weight, bias, B, layer, rule, state):
        ctx.layer, ctx.rule, ctx.state = layer, rule, state
        ctx.save_for_backward(x, weight, B)
        ctx.has_bias = bias is not None
        if isinstance(layer, torch.nn.Conv2d):
            return layer._conv_forward(x, weight, bias)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        x, weight, B = ctx.saved_tensors
        conv = isinstance(ctx.layer, torch.nn.Conv2d)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            if ctx.rule == "dfa":
                e = ctx.state.get("e")
                if e is None or e.shape[0] != x.shape[0]:
                    raise RuntimeError("DFA backward without the output error e (run the model's own forward)")
                e = e.to(B.dtype)
                gx = _conv_input_grad(x.shape, B, e[:, :, None, None].expand(-1, -1, *g.shape[2:]), ctx.layer) \
                    if conv else e @ B
            else:
                gx = _conv_input_grad(x.shape, B, g, ctx.layer) if conv else g @ B
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(x, weight.shape, g, stride=ctx.layer.stride, padding=ctx.layer.padding,
                                             dilation=ctx.layer.dilation, groups=ctx.layer.groups) if conv \
                else g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(dim=(0, 2, 3)) if conv else g.reshape(-1, g.shape[-1]).sum(0)
        return gx, gw, gb, None, None, None, None


def _check(name: str, layer, B, rule: str):
    if not isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
        raise InputError(f"feedback layer {name!r} is {type(layer).__name__}, not Linear/Conv2d", source="model")
    w = layer.weight
    want = tuple(w.shape) if rule != "dfa" else (B.shape[0],) + tuple(w.shape[1:])
    if tuple(B.shape) != want:
        raise InputError(f"feedback for {name!r} is {tuple(B.shape)}, the layer's {rule.upper()} feedback must be "
                         f"{want}", source="model")
    if not bool(torch.isfinite(B).all()):
        raise InputError(f"feedback for {name!r} has NaN/Inf entries", source="model")


def _patched_forward(layer, B, rule: str, state: dict):
    def forward(x):
        if rule == "dfa" and isinstance(layer, torch.nn.Linear) and x.dim() != 2:
            raise InputError(f"DFA Linear layers take (batch, features) inputs, got {tuple(x.shape)}",
                             source="model")
        return _Feedback.apply(x, layer.weight, layer.bias, B.to(device=x.device, dtype=layer.weight.dtype),
                               layer, rule, state)
    return forward


def _capture_error(state: dict):
    def hook(module, args, out):
        t = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
        if t is None and isinstance(out, (tuple, list)) and out:
            t = out[0]
        if isinstance(t, torch.Tensor) and t.requires_grad:
            t.register_hook(lambda g: state.__setitem__("e", g.detach()))
    return hook


@contextlib.contextmanager
def native_backward(model, feedback: dict, rule: str):
    """Within the block, autograd through ``model``'s layers named in ``feedback`` ({path: B}) follows
    ``rule`` ("dfa" or an FA-family rule) instead of BP; the model's forward is unchanged."""
    if rule not in ("fa", "usf", "brsf", "frsf", "dfa"):
        raise InputError(f"unknown learning rule {rule!r}", source="--signal")
    state: dict = {}
    layers = []
    for name, B in feedback.items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise InputError(f"feedback layer {name!r} is not a module of the model", source="model") from None
        _check(name, layer, B, rule)
        layers.append((layer, B))
    handle = model.register_forward_hook(_capture_error(state)) if rule == "dfa" else None
    saved = [(layer, layer.__dict__.get("forward")) for layer, _ in layers]
    try:
        for layer, B in layers:
            layer.forward = _patched_forward(layer, B, rule, state)
        yield state
    finally:
        for layer, prev in saved:
            del layer.forward  # back to the class's forward (or the instance's own, if it had one)
            if prev is not None:
                layer.forward = prev
        if handle is not None:
            handle.remove()


def native_input_grads(model, feedback: dict, rule: str, x, y, *, reduction: str = "sum") -> dict:
    """``{layer: d(loss)/d(input of layer)}`` under the library's rule: the native signal at every tensor a
    feedback layer consumes (the stream state h_l where the stream is the layers' inputs). Loss: CE over the
    model's logits, summed per sample (fadiag's BP scale) or ``reduction="mean"`` (BioTorch's)."""
    seen: dict = {}

    def pre(name):
        def f(module, args):
            if args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
                args[0].register_hook(lambda g: seen.__setitem__(name, g.detach()))
        return f

    handles = [model.get_submodule(n).register_forward_pre_hook(pre(n)) for n in feedback]
    try:
        with native_backward(model, feedback, rule), torch.enable_grad():
            xx = x.detach().clone().requires_grad_(True)
            out = model(xx)
            F.cross_entropy(out, y, reduction=reduction).backward()
    finally:
        for h in handles:
            h.remove()
    return seen
