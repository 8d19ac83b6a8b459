"""Training recipes shared by the example checkpoints and ``--frozen-baseline train``.

All recipes are seeded and single-threaded-friendly; they are documented in checkpoints_example/PROVENANCE.md.

- ``train_bp``: backprop, AdamW(lr, weight_decay), cosine or constant schedule, batch 64.
- ``train_dfa``: direct feedback alignment on a residual model, through its stream view
  (fadiag.stream.StreamView.local_forward): the embedding output h_0 and every block update u_l receive
  e @ B_l (e = softmax - onehot, divided by the batch size like the mean loss), with fixed Gaussian B_l
  (n_classes, d) drawn from their own seed; each block sees a detached input; the readout (out_ln and
  out_head) gets its true gradient (docs/science.md §5).
- ``train_frozen_baseline``: the blocks stay at a fresh seeded initialisation; only the embedding, the
  terminal norm and the head are trained, with the BP recipe (docs/science.md §1 (d)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BP_RECIPE = {"optimizer": "AdamW", "lr": 2e-3, "weight_decay": 0.1, "schedule": "cosine", "epochs": 10,
             "batch_size": 64}
DFA_RECIPE = {"optimizer": "Adam", "lr": 2e-2, "weight_decay": 0.0, "schedule": "constant", "epochs": 30,
              "batch_size": 64}


def _make_opt(params, recipe, steps):
    opt_cls = torch.optim.AdamW if recipe["optimizer"] == "AdamW" else torch.optim.Adam
    opt = opt_cls(params, lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    if recipe["schedule"] == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return opt, sched


def _batches(n, bs, g):
    perm = torch.randperm(n, generator=g)
    return [perm[i:i + bs] for i in range(0, n, bs)]


def _loop(model, x, y, recipe, seed, params, step_grads, progress, on_step=None):
    """The shared training loop: seeded minibatch order, optimiser + schedule; ``step_grads(xb, yb)`` fills
    the .grad buffers of one step (backprop, DFA, ...); ``on_step(model, step)`` after each optimiser step
    (step = steps done: a checkpoint saver, a fadiag.callbacks.Monitor)."""
    g = torch.Generator().manual_seed(seed)
    steps = recipe["epochs"] * math.ceil(len(x) / recipe["batch_size"])
    opt, sched = _make_opt(list(params), recipe, steps)
    model.train()
    done = 0
    for ep in range(recipe["epochs"]):
        for idx in _batches(len(x), recipe["batch_size"], g):
            opt.zero_grad(set_to_none=True)
            step_grads(x[idx], y[idx])
            opt.step()
            sched.step()
            done += 1
            if on_step is not None:
                on_step(model, done)
        if progress:
            progress(ep + 1, recipe["epochs"])
    model.eval()
    return model


def train_bp(model, x, y, recipe=BP_RECIPE, seed: int = 0, params=None, progress=None, view=None):
    """Backprop with the recipe. ``view`` (a fadiag.stream.StreamView of ``model``): its loss on the model's logits
    for lm and mse (fadiag.stream.per_sample_loss: mse in float64, lm by fadiag.stream.xent); mean CE otherwise."""
    def step(xb, yb):
        if view is None or view.stream.loss == "ce":  # the recipe's float32 CE (the shipped baselines)
            F.cross_entropy(model(xb) if view is None else view.call(xb), yb).backward()
        else:
            from .stream import per_sample_loss

            per_sample_loss(view.call(xb), yb, view.stream.loss, bool(view.stream.labels_shifted)).mean().backward()

    return _loop(model, x, y, recipe, seed, params if params is not None else model.parameters(), step, progress)


def make_feedback(n_layers_plus_one: int, n_classes: int, width: int, seed: int) -> torch.Tensor:
    """Fixed DFA feedback matrices B_l, l = 0..L, shape (L+1, n_classes, width), N(0, 1), own seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_layers_plus_one, n_classes, width, generator=g)


def train_dfa(model, x, y, feedback: torch.Tensor, recipe=DFA_RECIPE, seed: int = 0, progress=None, view=None,
              on_step=None):
    """DFA through the model's residual-stream view (``view``, a fadiag.stream.StreamView of ``model``; default:
    the preset fadiag.models.presets.resolve_view finds, the reference contract for ResMLP). The view's
    ``local_forward`` cuts the graph before every block and the readout; h_0 and every block update u_l
    receive e @ B_l, the readout its true CE gradient (docs/science.md §5)."""
    if view is None:
        from .models.presets import resolve_view

        view = resolve_view(model)

    def step(xb, yb):
        logits, outs = view.local_forward(xb)
        F.cross_entropy(logits, yb).backward()  # the readout: its true gradient (h_L is detached)
        e = (logits.detach().softmax(-1) - F.one_hot(yb, logits.shape[-1]).float()) / len(yb)
        for l, o in enumerate(outs):
            o.backward(e @ feedback[l])

    return _loop(model, x, y, recipe, seed, model.parameters(), step, progress, on_step)


def train_frozen_baseline(model, x, y, recipe=BP_RECIPE, seed: int = 0, progress=None, trainable_last: int = 0,
                          view=None):
    """Freeze every block at its (fresh, seeded) init; train embedding, terminal norm and head with BP.

    ``view``: the model's residual-stream view (fadiag.stream); its blocks are the ones frozen and everything
    else trains (embedding, readout). Without one, ``model.blocks``.
    ``trainable_last = k`` is the depth-ladder generalisation (docs/science.md §1): the last k blocks train too.
    """
    blocks = view.blocks if view is not None else list(model.blocks)
    n = len(blocks)
    if not 0 <= trainable_last <= n:
        raise ValueError(f"trainable_last must be in 0..{n}, got {trainable_last}")
    for i, blk in enumerate(blocks):
        for p in blk.parameters():
            p.requires_grad_(i >= n - trainable_last)
    params = [p for p in model.parameters() if p.requires_grad]
    return train_bp(model, x, y, recipe, seed=seed, params=params, progress=progress, view=view)


@torch.no_grad()
def accuracy(model, x, y, batch_size: int = 1024) -> float:
    from .diagnostics.protocol import accuracy as pooled

    model.eval()
    chunks = range(0, len(x), batch_size)
    return pooled([model(x[i:i + batch_size]) for i in chunks], [y[i:i + batch_size] for i in chunks])
