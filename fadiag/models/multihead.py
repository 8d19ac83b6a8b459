"""Multi-head MLP learner for online prediction (docs/science.md §4).

Architecture::

    x_raw (B, F)
      -> [online normaliser]  z = (x - norm_mean) / (sqrt(norm_var) + norm_eps)   (if normalize=True)
      -> trunk: for each width H_i in ``hidden``:
             Linear(H_{i-1}, H_i)  (weight (out, in))
             -> parameterless LayerNorm (F.layer_norm, no affine, eps layer_norm_eps)  (if use_layer_norm)
             -> LeakyReLU(leaky_relu_slope)

Defaults: norm_eps 1e-8, use_layer_norm true, layer_norm_eps 1e-5, leaky_relu_slope 0.01. An
alberta-framework learner built with ``use_layer_norm=False`` or another slope / epsilon must say so in
``model.args``: the Jacobian tier differs otherwise (the state-only tier does not depend on them).
      -> heads: ONE ``nn.Linear(H_last, n_heads)`` named ``heads``            -> (B, n_heads)

The heads are stored as one Linear, not a ModuleList: row h of ``heads.weight`` (n_heads, H_last) is
head h's weight vector w_h and ``heads.bias[h]`` its bias. With ``hidden=()`` there is no trunk and the
heads read the (normalised) input directly: ``heads.weight`` is (n_heads, F).

Normaliser buffers (only when ``normalize=True``): ``norm_mean`` (F,), ``norm_var`` (F,) (population
variance of every sample seen), ``norm_count`` (int64 scalar). ``update_normalizer(x)`` merges a batch
into them with the parallel Welford/Chan update; ``forward`` never updates them.

Key names of a flat state (a ``.pt`` dict of tensors, or an ``.npz`` of plain arrays; see
``state_from_arrays`` and ``split_state``)::

    trunk.<i>.weight   (H_i, H_{i-1})      trunk.<i>.bias   (H_i,)        i = 0 .. len(hidden)-1
    heads.weight       (n_heads, H_last)   heads.bias       (n_heads,)
    norm_mean (F,)  norm_var (F,)  norm_count ()                           only if normalize=True
    -- optional learner extras, read by fadiag.diagnostics.relevance, never loaded into the module --
    step_sizes.<param>       per-weight step size, same shape as <param> (Autostep style, or lr/(sqrt(v̂)+eps))
    log_step_sizes.<param>   per-weight log step size (IDBD style, beta = log alpha): exponentiated on read
    step_size                scalar step size shared by every weight
    traces.<param>           per-weight eligibility trace, same shape as <param>

``<param>`` is a parameter name above, e.g. ``step_sizes.trunk.0.weight`` or ``traces.heads.weight``.
A torch checkpoint may instead nest them: ``{"model": <module state>, "learner": {<extras>}}`` (what
checkpoints_example/multihead/multihead.pt does; fadiag's loader then finds the module state under "model").
Either way, ``learner_state_from_state_dict`` takes the merged flat dict.
All weights are (out, in), as in torch. A learner written in JAX/Flax stores kernels (in, out): pass
``weights_in_out=True`` to ``state_from_arrays`` and every 2-D weight-shaped array is transposed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fadiag.errors import CheckpointError

NORM_EPS = 1e-8
"""Added to sqrt(var) in the normaliser's divisor: z = (x - mean) / (sqrt(var) + NORM_EPS)."""

LEAKY_SLOPE = 0.01

EXTRA_PREFIXES = ("step_sizes.", "log_step_sizes.", "traces.")
"""Prefixes of per-parameter learner extras in a flat state (see module docstring)."""

EXTRA_KEYS = ("step_size",)
"""Whole keys of learner extras in a flat state."""

_PARAM_RE = re.compile(r"^(trunk\.\d+|heads)\.(weight|bias)$")
_BUFFERS = ("norm_mean", "norm_var", "norm_count")


class MultiHeadLearner(nn.Module):
    """Online normaliser -> Dense/LayerNorm/LeakyReLU trunk -> ``n_heads`` scalar heads.

    Args:
        n_features: F, the raw input width.
        hidden: trunk widths (H_0, ..., H_last); ``()`` means no trunk.
        n_heads: number of scalar prediction heads.
        normalize: keep an online normaliser (buffers ``norm_mean``, ``norm_var``, ``norm_count``).
        use_layer_norm: parameterless LayerNorm after each trunk Linear (alberta-framework's
            ``use_layer_norm``); leaky_relu_slope: the LeakyReLU's negative slope; norm_eps: added to
            sqrt(var) in the normaliser; layer_norm_eps: the LayerNorm's epsilon.

    ``forward(x_raw)``: (B, F) -> (B, n_heads).
    """

    def __init__(self, n_features: int, hidden: Sequence[int] = (64, 64), n_heads: int = 5,
                 normalize: bool = True, use_layer_norm: bool = True, leaky_relu_slope: float = LEAKY_SLOPE,
                 norm_eps: float = NORM_EPS, layer_norm_eps: float = 1e-5):
        super().__init__()
        for name, v in (("leaky_relu_slope", leaky_relu_slope), ("norm_eps", norm_eps),
                        ("layer_norm_eps", layer_norm_eps)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        self.use_layer_norm = bool(use_layer_norm)
        self.leaky_relu_slope = float(leaky_relu_slope)
        self.norm_eps = float(norm_eps)
        self.layer_norm_eps = float(layer_norm_eps)
        hidden = tuple(int(h) for h in hidden)
        if int(n_features) < 1 or int(n_heads) < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"sizes must be >= 1: n_features={n_features}, hidden={hidden}, "
                             f"n_heads={n_heads}")
        self.n_features = int(n_features)
        self.hidden = hidden
        self.n_heads = int(n_heads)
        self.normalize = bool(normalize)
        if self.normalize:
            self.register_buffer("norm_mean", torch.zeros(self.n_features))
            self.register_buffer("norm_var", torch.ones(self.n_features))
            self.register_buffer("norm_count", torch.zeros((), dtype=torch.int64))
        widths = (self.n_features,) + hidden
        self.trunk = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.heads = nn.Linear(widths[-1], self.n_heads)

    def normalized(self, x_raw: torch.Tensor) -> torch.Tensor:
        """z = (x - mean) / (sqrt(var) + norm_eps); identity when ``normalize=False``."""
        if not self.normalize:
            return x_raw
        return (x_raw - self.norm_mean) / (self.norm_var.sqrt() + self.norm_eps)

    def features(self, x_raw: torch.Tensor) -> torch.Tensor:
        """The last trunk activation (B, H_last) (the normalised input when there is no trunk)."""
        h = self.normalized(x_raw)
        for layer in self.trunk:
            h = layer(h)
            if self.use_layer_norm:
                h = F.layer_norm(h, h.shape[-1:], eps=self.layer_norm_eps)  # parameterless: no weight, no bias
            h = F.leaky_relu(h, self.leaky_relu_slope)
        return h

    def forward(self, x_raw: torch.Tensor) -> torch.Tensor:
        return self.heads(self.features(x_raw))

    @torch.no_grad()
    def update_normalizer(self, x: torch.Tensor) -> None:
        """Merge a batch x (B, F) into the running mean / population variance (Chan et al.'s
        parallel form of Welford's update): with n_a seen, n_b new, delta = mean_b - mean_a,
        mean <- mean_a + delta n_b / n, M2 = var_a n_a + var_b n_b + delta² n_a n_b / n, var <- M2 / n.
        """
        if not self.normalize:
            return
        x = x.detach().reshape(-1, self.n_features).to(self.norm_mean.dtype)
        n_b = x.shape[0]
        if n_b == 0:
            return
        n_a = float(self.norm_count.item())
        n = n_a + n_b
        mean_b = x.mean(0)
        var_b = x.var(0, unbiased=False)
        delta = mean_b - self.norm_mean
        m2 = self.norm_var * n_a + var_b * n_b + delta.square() * (n_a * n_b / n)
        self.norm_mean.add_(delta * (n_b / n))
        self.norm_var.copy_(m2 / n)
        self.norm_count.add_(n_b)


def split_state(d: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """Split a flat state into (module state dict, learner extras) by the key names above.

    The module part loads into ``MultiHeadLearner`` with ``strict=True``; the extras
    (``step_sizes.*``, ``log_step_sizes.*``, ``traces.*``, ``step_size``) feed
    ``fadiag.diagnostics.relevance.learner_state_from_state_dict``.
    """
    module, extras = {}, {}
    for k, v in d.items():
        (extras if k in EXTRA_KEYS or k.startswith(EXTRA_PREFIXES) else module)[k] = v
    return module, extras


def state_from_arrays(d: Mapping[str, np.ndarray], *, weights_in_out: bool = False) -> dict:
    """Map plain arrays (e.g. ``np.load(path, allow_pickle=False)``) to a flat dict of tensors.

    Keys are those of the module docstring; an unknown key is a ``CheckpointError`` naming it, so a
    typo never silently drops a tensor. Floating arrays keep their dtype (``load_state_dict`` casts to
    the module's); ``norm_count`` becomes int64 and defaults to 0 when absent (then the next
    ``update_normalizer`` restarts the statistics; auditing never needs it). With
    ``weights_in_out=True`` (JAX/Flax kernels) every 2-D array under a ``.weight`` name is transposed
    to torch's (out, in).
    """
    out: dict[str, torch.Tensor] = {}
    for key in d:
        arr = np.asarray(d[key])
        if arr.dtype == object:
            raise CheckpointError(f"array {key!r} has dtype object; only numeric arrays are read")
        param = key
        for p in EXTRA_PREFIXES:
            if key.startswith(p):
                param = key[len(p):]
                break
        if not (key in EXTRA_KEYS or key in _BUFFERS or _PARAM_RE.match(param)):
            raise CheckpointError(
                f"unknown array {key!r}; expected trunk.<i>.weight/bias, heads.weight/bias, norm_mean, "
                f"norm_var, norm_count, step_size, or step_sizes./log_step_sizes./traces.<param>")
        if weights_in_out and arr.ndim == 2 and param.endswith(".weight"):
            arr = arr.T
        if key == "norm_count":
            out[key] = torch.tensor(int(arr), dtype=torch.int64)
        else:
            out[key] = torch.from_numpy(np.array(arr, copy=True))  # own the memory, writable
    if "norm_mean" in out and "norm_count" not in out:
        out["norm_count"] = torch.zeros((), dtype=torch.int64)
    return out
