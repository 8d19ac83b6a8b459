"""Items 1-3 of docs/science.md §3: capture block signals, reduce them per node, pair block l with l+1."""

from __future__ import annotations


import numpy as np
import torch

from ._checks import AGGS, NORMS, _as_tensor

def reduce_channels(
    x, channel_groups, n_nodes: int, norm: str = "l2", agg: str = "sum"
) -> torch.Tensor:
    """Per-node signal from per-channel values (docs/science.md §3 item 2).

    out[l, b, n] = agg_{c : channel_groups[c] = n} t(x[l, b, c]),
    t = |x| (``l1``), x² (``l2``; squared, as the reference), x (``none``);
    agg = sum | mean | max; an empty group gives 0 for every agg.

    Args:
        x: (L, B, C) per-channel values (any leading shape works; the last dim is channels).
        channel_groups: (C,) integer node id of each channel, in [0, n_nodes).
        n_nodes: N.
    Returns:
        (L, B, N) tensor in x's dtype (float32 for integer input), on x's device.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if agg not in AGGS:
        raise ValueError(f"agg must be one of {', '.join(AGGS)}, got {agg!r}")
    x = _as_tensor(x, "x")
    if not x.is_floating_point():
        x = x.to(torch.float32)
    groups = _as_tensor(channel_groups, "channel_groups")
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, (int, np.integer)) or n_nodes < 1:
        raise ValueError(f"n_nodes must be a positive integer, got {n_nodes!r}")
    if x.dim() < 1:
        raise ValueError("x must have a channel dimension (last dim)")
    if groups.dim() != 1 or groups.shape[0] != x.shape[-1]:
        raise ValueError(
            f"channel_groups must have shape (C,) = ({x.shape[-1]},) to match x's last dim, "
            f"got {tuple(groups.shape)}"
        )
    if groups.is_floating_point() or groups.dtype == torch.bool:
        raise ValueError(f"channel_groups must be an integer tensor, got {groups.dtype}")
    groups = groups.to(device=x.device, dtype=torch.long)
    if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= n_nodes):
        raise ValueError(
            f"channel_groups has node ids in [{int(groups.min())}, {int(groups.max())}], "
            f"outside [0, {n_nodes - 1}]"
        )
    if norm == "l1":
        t = x.abs()
    elif norm == "l2":
        t = x * x
    else:
        t = x
    out = torch.zeros(*x.shape[:-1], n_nodes, dtype=t.dtype, device=x.device)
    if agg == "max":
        idx = groups.expand_as(t)
        # include_self=False: an empty group keeps the 0 it was initialised with.
        return out.scatter_reduce_(-1, idx, t, reduce="amax", include_self=False)
    out.index_add_(-1, groups, t)
    if agg == "mean":
        counts = torch.bincount(groups, minlength=n_nodes).to(t.dtype)
        out = out / counts.clamp_min(1)
    return out


def pair_observations(acts_nodes, grads_nodes) -> tuple[torch.Tensor, torch.Tensor]:
    """Observation matrices (docs/science.md §3 item 3).

    A = acts_nodes[0 .. L-2] and G = grads_nodes[1 .. L-1], each flattened to (M, N), M = (L-1)·B:
    row (l, b) of A is node activity in block l, the same row of G the gradient in block l+1.

    Args:
        acts_nodes, grads_nodes: (L, B, N), L >= 2.
    Returns:
        (A, G), each (M, N).
    """
    a = _as_tensor(acts_nodes, "acts_nodes")
    g = _as_tensor(grads_nodes, "grads_nodes")
    if a.dim() != 3 or a.shape != g.shape:
        raise ValueError(
            f"acts_nodes and grads_nodes must both be (L, B, N), got {tuple(a.shape)} and {tuple(g.shape)}"
        )
    if a.shape[0] < 2:
        raise ValueError(f"pairing layer l with l+1 needs L >= 2 layers, got L = {a.shape[0]}")
    n = a.shape[-1]
    return a[:-1].reshape(-1, n), g[1:].reshape(-1, n)



def capture_block_signals(model, x, y, where: str = "pre", loss: str = "ce"):
    """One forward + backward pass capturing every block's activations and their loss gradients
    (docs/science.md §3 item 1).

    For block l with normalisation module ``model.blocks[l].norm``: the activation is the norm's input
    (``where="pre"``, the residual stream h_l) or its output (``"post"``); the gradient is
    d loss / d activation, loss = mean cross-entropy(model(x), y) (``"ce"``, y (B,) class ids) or mean
    squared error (``"mse"``, y shaped like the output). The pass runs in eval mode under
    ``torch.enable_grad()``; gradients come from ``torch.autograd.grad`` on the captured tensors only,
    so no parameter's ``.grad`` is written. On exit, also on exception, every submodule's training
    flag, every parameter's requires_grad and every parameter's ``.grad`` (None or the same tensor,
    values untouched) are restored and the hooks removed.

    Args:
        model: a module with ``blocks`` (sequence), each block with a ``norm`` submodule, whose
            activations are (B, C) (e.g. fadiag.models.gsnn.GSNN).
        x: (B, in_dim) inputs; y: targets.
    Returns:
        (acts, grads, loss): acts and grads (L, B, C) detached float tensors, loss a float.
    """
    if where not in ("pre", "post"):
        raise ValueError(f"where must be 'pre' or 'post', got {where!r}")
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}")
    from ...stream import capture_modules  # the one residual view's capture (fadiag/stream)

    if loss == "ce":
        def loss_fn(out):
            return torch.nn.functional.cross_entropy(out, y)
    else:
        def loss_fn(out):
            return torch.nn.functional.mse_loss(out, y.to(out.dtype).reshape(out.shape))
    acts, grads, value = capture_modules(model, x, loss_fn, _norm_modules(model), where)
    return torch.stack(acts), torch.stack(grads), value


def _norm_modules(model) -> list:
    """The ``norm`` submodule of every block of ``model.blocks``; ValueError if a block has none."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ValueError("model has no blocks to capture (expected model.blocks)")
    norms = []
    for i, block in enumerate(blocks):
        norm_mod = getattr(block, "norm", None)
        if not isinstance(norm_mod, torch.nn.Module):
            raise ValueError(f"model.blocks[{i}] has no 'norm' submodule to hook")
        norms.append(norm_mod)
    return norms
