"""Feature relevance of a multi-head MLP learner (docs/science.md §4). Pure math: no printing, no files.

Two tiers.

State-only tier (no data): read from the weights and the learner's optimiser state alone.

    weight_relevance      (n_heads, F)  path norm. P = |W_0|; P = |W_i| @ P for each later trunk layer;
                                        rel[h] = |w_h| @ P.  With no trunk rel[h] = |w_h|.
                                        rel[h, f] = sum over all paths f -> h of prod |w| along the path.
    step_size_activity    (F,)          mean over the input layer's output units of |step size|; a scalar
                                        step size is repeated; IDBD log step sizes are exponentiated first
                                        (the reference silently returned zeros for them).
    trace_activity        (F,)          mean over the input layer's output units of |eligibility trace|.
    normalizer_mean/std   (F,)          norm_mean, std = sqrt(norm_var + 1e-8).
    normalized_weight_relevance (n_heads, F)  rel * std: the reference's field, kept faithfully. It is
                                        relevance per standard deviation *scaled up* by std.
    per_raw_unit_relevance (n_heads, F) rel / (sqrt(norm_var) + 1e-8): the path norm of the composite
                                        map x_raw -> pred_h, i.e. relevance per raw input unit. The divisor
                                        is exactly the normaliser's (forward: z = (x - mean)/(sqrt(var)+1e-8)).
                                        normalized * per_raw = rel² * sqrt(var+1e-8) / (sqrt(var)+1e-8).
    head_reliance         (n_heads, H_last)  |w_h|.
    mean_step_size        (n_heads,)    mean |step size| of head h's weights (a scalar is repeated).

"Input layer" means trunk layer 0, or the heads when there is no trunk.

Sensitivity tier (needs the model and observations):

    sensitivity(model, x)          (n_heads, F)  Jacobian d pred_h / d x_raw at one observation, through
                                                 the normaliser: in closed form for a MultiHeadLearner
                                                 (mlp_jacobian), else by reverse mode (n_heads < F).
    mean_abs_sensitivity(model, X) (n_heads, F)  mean over rows of |Jacobian|.

Absent inputs give absent report fields, never zeros. Non-finite weights are not an error: NaN/Inf
propagate to exactly the entries whose paths they lie on (a NaN in W_0[j, f] poisons column f only;
a NaN in a later layer or a head poisons every entry it feeds). ``relevance_report`` keeps them as
float nan/inf (JSON renderers write null, DESIGN.md); ``non_finite_fields`` lists where they are.

Performance: the state-only report is logged every minute by a daemon (5 heads x 12 features, (64, 64)
trunk), so ``relevance_report`` runs on float64 numpy copies that ``LearnerState.arrays`` makes once
per state. There is one implementation of each formula, that one; ``path_norm_relevance`` applies the same
``_path_norm`` to torch weights. tests/families/relevance/test_relevance.py checks the report against independent float64
references (loops over paths, explicit means). See docs/relevance.md for the measured cost.

Import and the state-only tier need numpy only (a JAX user need not install torch): ``LearnerState`` and
``learner_state_from_state_dict`` (fadiag.diagnostics.learner_state, re-exported here) take numpy arrays
as well as tensors; torch is imported by ``path_norm_relevance`` and the sensitivity tier when called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from fadiag.errors import InputError

from .learner_state import (STEP_SIZE_KINDS, LearnerState, _f64, adam_effective_step_size,  # noqa: F401
                            learner_state_from_state_dict)

STD_EPS = 1e-8
"""normalizer_std = sqrt(var + STD_EPS) (docs/science.md §4)."""

NORM_EPS = 1e-8
"""The normaliser's divisor is sqrt(var) + NORM_EPS (same constant as fadiag.models.multihead)."""


# --------------------------------------------------------------------------------------------------
# The formulas, once, for numpy arrays and torch tensors alike.

def _path_norm(abs_trunk: Sequence, abs_heads):
    """Path norm from the element-wise absolute weights |W_0|, |W_1|, ..., |w_h|.

    |w_h| @ (|W_L| @ ... @ |W_0|), evaluated from the heads' side: the product is associative and
    (n_heads, H) @ (H, H) costs n_heads/F of (H, H) @ (H, F) when n_heads < F.
    """
    q = abs_heads
    for w in reversed(abs_trunk):
        q = q @ w
    return q


@lru_cache(maxsize=64)
def _averager(n: int) -> np.ndarray:
    v = np.full(n, 1.0 / n)
    v.flags.writeable = False
    return v


def _np_mean(m: np.ndarray, axis: int, n: int) -> np.ndarray:
    """numpy ``_mean`` as a matrix-vector product: on (64, 12) numpy's axis reduction costs ~2 µs,
    the product with a cached 1/n vector ~0.5 µs."""
    if not m.ndim:
        return m.repeat(n)
    return _averager(m.shape[0]) @ m if axis == 0 else m @ _averager(m.shape[1])


def _std(var):
    return (var + STD_EPS) ** 0.5


def _raw_divisor(var):
    return var ** 0.5 + NORM_EPS


# --------------------------------------------------------------------------------------------------
# The tensor form of the path norm (float64 in, float64 out), for callers holding torch weights.

def path_norm_relevance(trunk_weights: Sequence[torch.Tensor], head_weights: torch.Tensor) -> torch.Tensor:
    """Path-norm relevance (n_heads, F): P = |W_0|; P = |W_i| @ P; rel[h] = |w_h| @ P.

    trunk_weights: [(H_0, F), (H_1, H_0), ...] (out, in); head_weights: (n_heads, H_last), or
    (n_heads, F) with an empty trunk (then rel = |w_h|).
    """
    return _path_norm([abs(_f64(w)) for w in trunk_weights], abs(_f64(head_weights)))


# --------------------------------------------------------------------------------------------------
# The report (fast path).

@lru_cache(maxsize=256)
def _names(given: tuple[str, ...] | None, n: int, stem: str) -> tuple[str, ...]:
    if given is None:
        return tuple(f"{stem}_{i}" for i in range(n))
    if len(given) != n:
        raise InputError(f"relevance: {len(given)} {stem} names given for {n} {stem}s")
    if len(set(given)) != n:
        raise InputError(f"relevance: duplicate {stem} names would overwrite each other: {list(given)}")
    return tuple(str(g) for g in given)


def _by_name(names: tuple[str, ...], values) -> dict[str, float]:
    return dict(zip(names, values.tolist()))


def relevance_report(state: LearnerState, feature_names: Sequence[str] | None = None,
                     head_names: Sequence[str] | None = None) -> dict:
    """The docs/science.md §4 JSON layout as plain dicts of Python floats::

        {"trunk": {"step_size_activity": {feature: v}, "trace_activity": {...},
                   "normalizer_mean": {...}, "normalizer_std": {...}},
         "per_head": {head: {"weight_relevance": {feature: v},
                             "normalized_weight_relevance": {feature: v},   # rel * std (reference)
                             "per_raw_unit_relevance": {feature: v},        # rel / (sqrt(var) + 1e-8)
                             "head_reliance": {"neuron_j": v},              # with no trunk, j = feature j
                             "mean_step_size": v}}}

    A field whose input is absent from ``state`` is absent (never zeros). Default names feature_i,
    head_i. Non-finite values stay nan/inf (see ``non_finite_fields``).
    """
    a = state.arrays
    wh = a.wh
    n_heads, h_last = wh.shape
    n_f = a.ws[0].shape[1] if a.ws else h_last
    fn = _names(None if feature_names is None else tuple(feature_names), n_f, "feature")
    hn = _names(None if head_names is None else tuple(head_names), n_heads, "head")
    nn = _names(None, h_last, "neuron")

    trunk: dict[str, dict[str, float]] = {}
    if a.s_in is not None:
        trunk["step_size_activity"] = _by_name(fn, _np_mean(a.s_in, 0, n_f))
    if a.tr_in is not None:
        trunk["trace_activity"] = _by_name(fn, _np_mean(a.tr_in, 0, n_f))
    if a.mean is not None:
        trunk["normalizer_mean"] = _by_name(fn, a.mean)

    rel = _path_norm(a.ws, wh)
    fields = [("weight_relevance", rel.tolist())]
    if a.var is not None:
        std = _std(a.var)
        trunk["normalizer_std"] = _by_name(fn, std)
        fields.append(("normalized_weight_relevance", (rel * std).tolist()))
        fields.append(("per_raw_unit_relevance", (rel / _raw_divisor(a.var)).tolist()))
    reliance = wh.tolist()  # already |w_h|
    mean_step = None if a.s_head is None else _np_mean(a.s_head, 1, n_heads).tolist()

    per_head = {}
    for h, name in enumerate(hn):
        entry = {field: dict(zip(fn, rows[h])) for field, rows in fields}
        entry["head_reliance"] = dict(zip(nn, reliance[h]))
        if mean_step is not None:
            entry["mean_step_size"] = mean_step[h]
        per_head[name] = entry
    return {"trunk": trunk, "per_head": per_head}


def non_finite_fields(report: Mapping) -> list[str]:
    """Dotted paths of every non-finite number in a relevance report, e.g.
    ``per_head.head_0.weight_relevance.feature_2`` (empty list when all are finite)."""
    out: list[str] = []

    def walk(node, path):
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, float) and not math.isfinite(node):
            out.append(path)

    walk(report, "")
    return out


# --------------------------------------------------------------------------------------------------
# Sensitivity tier.

class _EvalMode:
    """Eval mode for the duration; the model's own flag is restored afterwards."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def sensitivity(model: torch.nn.Module, x_raw: torch.Tensor) -> torch.Tensor:
    """Jacobian d pred_h / d x_raw at one observation, (n_heads, F), through the normaliser, in the model's dtype.

    model: (B, F) -> (B, n_heads); x_raw: (F,) or (1, F). A MultiHeadLearner on the CPU: the closed form
    (:func:`mlp_jacobian`, float64 numpy). Any other model: reverse mode (torch.func.jacrev: one
    vector-Jacobian product per head, as n_heads < F), in eval mode; parameter .grad untouched.
    """
    import torch

    from ..models.multihead import MultiHeadLearner

    x = x_raw.detach().reshape(-1)
    if type(model) is MultiHeadLearner and x.device.type == "cpu" and model.heads.weight.device.type == "cpu":
        return torch.from_numpy(mlp_jacobian(model, x.double().numpy())).to(model.heads.weight.dtype)
    with _EvalMode(model), torch.enable_grad():
        return torch.func.jacrev(lambda v: model(v.unsqueeze(0)).squeeze(0))(x).detach()


def mlp_jacobian(model, x: np.ndarray) -> np.ndarray:
    """d pred / d x_raw of a MultiHeadLearner at x (F,), float64, in closed form: the product, heads first,
    W_heads · Π_i (S_i · N_i · W_i) · D, with D = diag(1 / (sqrt(var) + norm_eps)) the normaliser, N_i the
    parameterless LayerNorm's Jacobian (I - 11ᵀ/H - n nᵀ/H) / σ at layer i's pre-activation a_i (n its
    normalised value, σ = sqrt(var(a_i) + eps)), S_i = diag(1 if n > 0 else slope) the LeakyReLU's (torch's
    convention at 0). One forward through the trunk in numpy, then one (n_heads, H) row block per layer."""
    def f64(t):
        return t.detach().numpy().astype(np.float64, copy=False)

    ws = [(f64(layer.weight), f64(layer.bias)) for layer in model.trunk]
    d = 1.0 / (np.sqrt(f64(model.norm_var)) + model.norm_eps) if model.normalize else np.ones_like(x)
    h = (x - f64(model.norm_mean)) * d if model.normalize else x
    cached = []
    for w, b in ws:
        a = w @ h + b
        n = sigma = None
        if model.use_layer_norm:
            mu = a.mean()
            sigma = np.sqrt(np.mean((a - mu) ** 2) + model.layer_norm_eps)
            a = n = (a - mu) / sigma
        slope = np.where(a > 0, 1.0, model.leaky_relu_slope)
        cached.append((slope, n, sigma))
        h = a * slope
    r = f64(model.heads.weight)
    for (w, _), (slope, n, sigma) in zip(ws[::-1], cached[::-1]):
        r = r * slope
        if n is not None:  # r · N = (r - mean(r) - (r · n) nᵀ / H) / σ
            r = (r - r.mean(1, keepdims=True) - np.outer(r @ n, n) / n.size) / sigma
        r = r @ w
    return r * d


def mean_abs_sensitivity(model: torch.nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Mean over the N rows of X (N, F) of |d pred_h / d x_raw|, (n_heads, F), float64.

    One forward on the whole batch, then one backward per head of sum_rows pred_h: because rows do not
    interact (per-sample LayerNorm, eval mode), d(sum_n pred_h(x_n))/dx_m = d pred_h(x_m)/dx_m, so
    the input gradient holds every row's Jacobian row at once. A model that mixes rows (BatchNorm in
    train mode) would break this; eval mode is forced for that reason.
    """
    import torch

    X = X.detach().clone().requires_grad_(True)
    with _EvalMode(model), torch.enable_grad():
        out = model(X)
        n_heads = out.shape[1]
        rows = []
        for h in range(n_heads):
            (g,) = torch.autograd.grad(out[:, h].sum(), X, retain_graph=h < n_heads - 1)
            rows.append(g.abs().to(torch.float64).mean(0))
    return torch.stack(rows)
