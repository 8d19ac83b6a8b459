"""The residual-stream view of a model: ONE forward + backward per batch gives logits, the hidden states
h_0..h_L and the BP gradients g_l = d(mean CE)/dh_l (SCIENCE.md §1). Everything the audit needs comes
from this single pass.

Works on any model honouring the reference contract ``model(x, return_hidden=True) -> (logits, hs)``.
Token models (B, T, d) are reduced to the class token (index 0) for every per-sample quantity.
Parameter ``.grad`` buffers are never touched (gradients are taken w.r.t. the hidden states only) and the
model's training mode is restored on exit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class StreamPass:
    """One batch through the stream. Tensors are detached, on the CPU, per-sample views (B, d)."""

    logits: torch.Tensor
    hiddens: list
    grads: list
    loss: float


def per_sample(h: torch.Tensor) -> torch.Tensor:
    """(B, d) as is; (B, T, d) -> the class token (B, d); (B, ...) else flattened."""
    if h.dim() == 3:
        return h[:, 0]
    if h.dim() == 2:
        return h
    return h.flatten(1)


CONTRACT = "model(x, return_hidden=True) -> (logits, [h_0..h_L])"


def forward_hidden(model, x):
    """The reference contract's one call. A model that does not honour it is bad input (exit 2)."""
    from .errors import SpecError

    try:
        out = model(x, return_hidden=True)
    except TypeError as e:
        raise SpecError(f"the model does not honour the contract {CONTRACT} ({e})", source="model.arch") from None
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], (list, tuple)) and out[1]):
        raise SpecError(f"the model does not honour the contract {CONTRACT}: it returned {type(out).__name__}",
                        source="model.arch")
    logits, hs = out
    return logits, list(hs)


def stream_pass(model, x: torch.Tensor, y: torch.Tensor, device: str = "cpu") -> StreamPass:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            x = x.to(device)
            if x.dtype.is_floating_point:
                # A leaf that requires grad puts every h_l in the graph even when all params are frozen.
                x = x.detach().clone().requires_grad_(True)
            y = y.to(device)
            logits, hs = forward_hidden(model, x)
            loss = F.cross_entropy(logits.float(), y)
            need = [h for h in hs if h.requires_grad]
            got = torch.autograd.grad(loss, need, allow_unused=True) if need and loss.requires_grad else []
            it = iter(got)
            grads = []
            for h in hs:
                g = next(it) if h.requires_grad else None
                grads.append(torch.zeros_like(h) if g is None else g)
        return StreamPass(
            logits=logits.detach().cpu(),
            hiddens=[per_sample(h.detach()).cpu() for h in hs],
            grads=[per_sample(g.detach()).cpu() for g in grads],
            loss=float(loss.detach()),
        )
    finally:
        for m, mode in modes:  # every submodule's own mode, not just the top level's
            m.training = mode
