"""Passes through a :class:`~fadiag.stream.view.StreamView`: ONE forward + backward per batch giving h_l and
g_l (``full_pass``), the residual check on the first batch (``settled_pass``), the per-sample summary the
audit reads (``stream_pass``), and a forward + backward that captures any modules' inputs or outputs with
their loss gradients (``capture_modules``: what edge inference reads, docs/science.md §3 item 1).

Parameter ``.grad`` buffers are never touched (gradients come from ``torch.autograd.grad``) and every
submodule's training mode is restored.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field, replace

import torch

from .mask import model_inputs
from .readings import read_model
from .spec import logits_of, token_norms
from .view import StreamView


@dataclass
class StreamPass:
    """One batch through the stream. Tensors are detached, on the CPU, per-sample views (B, d)."""

    logits: torch.Tensor
    hiddens: list
    grads: list
    loss: float
    view: object = None
    shapes: list = field(default_factory=list)
    """The full shape of each h_l (before pooling), e.g. (B, C, H, W) per ResNet stage."""
    token_norms: list | None = None
    """Token models ((B, T, d) states, pooled): per h_l the (B,) mean per-token norm (spec.token_norms); else None."""


class _Modes:
    """Eval mode for the pass; every submodule's own mode restored on exit."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


def grads_or_zeros(loss, tensors: list) -> list:
    """d loss / d t for each tensor (zeros for one outside the loss's graph), by ``torch.autograd.grad``."""
    need = [t for t in tensors if t.requires_grad]
    got = torch.autograd.grad(loss, need, allow_unused=True) if need and loss.requires_grad else []
    it = iter(got)
    out = []
    for t in tensors:
        g = next(it) if t.requires_grad else None
        out.append(torch.zeros_like(t) if g is None else g)
    return out


def full_pass(view: StreamView, x, y, *, reduction: str = "mean"):
    """(logits, hs, grads, per-sample losses, io): ONE forward + backward; grads of the mean (or sum) loss
    with respect to the full states h_l. Runs under enable_grad; the caller restores modes."""
    with torch.enable_grad():
        if x.dtype.is_floating_point:
            # A leaf that requires grad puts every h_l in the graph even when all params are frozen.
            x = x.detach().clone().requires_grad_(True)
        logits, hs, io = view.capture(x)
        per = view.loss_of(logits, x, y)
        grads = grads_or_zeros(per.mean() if reduction == "mean" else per.sum(), hs)
    return logits.detach(), [h.detach() for h in hs], [g.detach() for g in grads], per.detach(), io


def settled_pass(view: StreamView, x, y, *, reduction: str = "mean"):
    """(view, full_pass results). An unsettled view is settled on this batch by the same pass: the residual
    check reads the blocks' inputs and outputs it captured, and the module that feeds block 0 (stream.embed, for
    residual outside) is found by hooks on that same forward. Residual auto measured outside changes only h_L
    (in_{L-1} + out_{L-1} instead of out_{L-1}; g_L is the same gradient, the sum passing it through), so h_L is
    formed from the captured pair; with readout modules, whose input is h_L, the batch runs again."""
    view = view.for_batch(x)  # pooling reads this batch's attention mask, if any
    if not view.settled:  # logits, causal/pooling, label shift (fadiag.stream.readings)
        view = read_model(view, x, y)
    probe = not view.settled and view.embed is None and view.stream.residual != "inside"
    with view.embed_probe() if probe else contextlib.nullcontext() as found:
        res = full_pass(view, x, y, reduction=reduction)
    if view.settled:
        return view, res
    with torch.no_grad():
        v = _settle(view, res[4], res[1], x, found)
    if (v.stream.residual == "outside") != (view.stream.residual == "outside"):  # what capture reads changed
        if v.stream.residual == "outside" and not v.readout:
            logits, hs, grads, per, io = res
            hin, out = io[-1]
            res = (logits, [*hs[:-1], (hin + out).detach()], grads, per, io)
        else:
            res = full_pass(v, x, y, reduction=reduction)
    return v, res


def stream_pass(view, x: torch.Tensor, y: torch.Tensor, device: str = "cpu") -> StreamPass:
    """One batch: logits, pooled h_l and g_l = d(mean loss)/dh_l (loss in float64). ``pass.view`` is the view
    settled on this batch (residual inside/outside checked): pass it on to the next batch."""
    if not isinstance(view, StreamView):
        from ..models.presets import resolve_view

        view = resolve_view(view)
    with _Modes(view.model):
        x, y = x.to(device), y.to(device)
        view, (logits, hs, grads, per, _) = settled_pass(view, x, y)
    return StreamPass(
        logits=logits.cpu(),
        hiddens=[view.pool(h).cpu() for h in hs],
        grads=[view.pool_grad(g).cpu() for g in grads],
        loss=float(per.mean()), view=view, shapes=[tuple(h.shape) for h in hs], token_norms=_token_norms(view, hs))


def _token_norms(view: StreamView, hs: list):
    """Per h_l the per-token norms (B,) when every state is a pooled token state; None otherwise."""
    if not hs or view.stream.pool == "none" or any(h.dim() != 3 for h in hs):
        return None
    return [token_norms(h, view.stream.prefix_tokens, view.mask).cpu() for h in hs]


def _settle(view: StreamView, io, hs, x, found=None) -> StreamView:
    v = view.check_residual(io, hs)
    v.stream = replace(v.stream, token_states=any(h.dim() == 3 for h in hs))  # v is a new view
    if v.stream.residual == "outside" and v.embed is None:
        e = v.find_embed(x, found)
        v = v.with_residual("outside", f"embed {e!r}: its output is what block 0 consumes (first batch)", embed=e)
    return v


def first_batch_view(view: StreamView, x, device: str = "cpu") -> StreamView:
    """Settle a view on a batch without the audit (one extra forward; no gradients are used)."""
    x = x.to(device)
    view = view.for_batch(x)
    with _Modes(view.model), torch.no_grad():
        view = read_model(view, x)
        _, hs, io = view.capture(x)
        return _settle(view, io, hs, x)


def capture_modules(model, x, loss_fn, modules, where: str = "pre"):
    """ONE forward + backward of ``model(x)`` capturing, at each module of ``modules``, its first input
    (``where="pre"``) or its output (``"post"``) and the gradient of ``loss_fn(output)`` (a scalar) with respect
    to it. The pass runs in eval mode under enable_grad with every parameter requiring grad (so a frozen model's
    activations are in the graph); on exit, also on exception, the hooks are removed and every submodule's
    training flag, every parameter's requires_grad and ``.grad`` (the same tensor, untouched) restored.
    Returns (acts, grads, loss): lists of detached tensors in the order of ``modules``, and the loss as a float.
    Raises ValueError when a module was not run by the forward."""
    if where not in ("pre", "post"):
        raise ValueError(f"where must be 'pre' or 'post', got {where!r}")
    params = list(model.parameters())
    saved = [(p, p.requires_grad, p.grad) for p in params]
    captured: list = [None] * len(modules)

    def hook(i):
        def f(_m, inputs, output):
            captured[i] = inputs[0] if where == "pre" else output
        return f

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        with _Modes(model), torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            args, kw = model_inputs(model, x)  # attention_mask= when x carries one (fadiag.stream.mask)
            with contextlib.redirect_stdout(sys.stderr):  # a model's print() must not corrupt JSON on stdout
                loss = loss_fn(logits_of(model(*args, **kw)))
            missing = [i for i, c in enumerate(captured) if c is None]
            if missing:
                raise ValueError(f"blocks {missing} were not run by the forward pass")
            grads = grads_or_zeros(loss, captured)
        return [c.detach() for c in captured], [g.detach() for g in grads], float(loss.detach())
    finally:
        for h in handles:
            h.remove()
        for p, flag, g in saved:
            p.requires_grad_(flag)
            p.grad = g
