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
    head_mean_step_size   (n_heads,)    mean |step size| of head h's weights (a scalar is repeated).

"Input layer" means trunk layer 0, or the heads when there is no trunk.

Sensitivity tier (needs the model and observations):

    sensitivity(model, x)          (n_heads, F)  Jacobian d pred_h / d x_raw at one observation, through
                                                 the normaliser, by reverse mode (n_heads < F).
    mean_abs_sensitivity(model, X) (n_heads, F)  mean over rows of |Jacobian|.

Absent inputs give absent report fields, never zeros. Non-finite weights are not an error: NaN/Inf
propagate to exactly the entries whose paths they lie on (a NaN in W_0[j, f] poisons column f only;
a NaN in a later layer or a head poisons every entry it feeds). ``relevance_report`` keeps them as
float nan/inf (JSON renderers write null, DESIGN.md); ``non_finite_fields`` lists where they are.

Performance: the state-only report is logged every minute by a daemon (5 heads x 12 features, (64, 64)
trunk), so ``relevance_report`` runs on float64 numpy copies that ``LearnerState.arrays`` makes once
per state; the math is shared with the torch functions below (written against the operators that both
numpy and torch have: ``abs``, ``@``, ``.mean``, ``.repeat``, ``**``), so there is one formula, not two.
See docs/relevance.md for the measured cost.

Import and the state-only tier need numpy only (a JAX user need not install torch): ``LearnerState`` and
``learner_state_from_state_dict`` take numpy arrays as well as tensors; torch is imported by the tensor
functions and the sensitivity tier when they are called.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from fadiag.errors import CheckpointError, InputError, MissingInputError

STD_EPS = 1e-8
"""normalizer_std = sqrt(var + STD_EPS) (docs/science.md §4)."""

NORM_EPS = 1e-8
"""The normaliser's divisor is sqrt(var) + NORM_EPS (same constant as fadiag.models.multihead)."""

STEP_SIZE_KINDS = ("auto", "step_sizes", "log_step_sizes", "adam", "step_size", "none")

_TRUNK_RE = re.compile(r"^trunk\.(\d+)\.weight$")


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


def _mean(m, axis: int, n: int):
    """Mean of m along ``axis``; a 0-d m (one shared value) is repeated n times."""
    return m.mean(axis) if m.ndim else m.repeat(n)


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
# Public tensor functions (float64 in, float64 out).

def _f64(t) -> torch.Tensor:
    import torch

    return torch.as_tensor(t).detach().to("cpu", torch.float64)


def path_norm_relevance(trunk_weights: Sequence[torch.Tensor], head_weights: torch.Tensor) -> torch.Tensor:
    """Path-norm relevance (n_heads, F): P = |W_0|; P = |W_i| @ P; rel[h] = |w_h| @ P.

    trunk_weights: [(H_0, F), (H_1, H_0), ...] (out, in); head_weights: (n_heads, H_last), or
    (n_heads, F) with an empty trunk (then rel = |w_h|).
    """
    return _path_norm([abs(_f64(w)) for w in trunk_weights], abs(_f64(head_weights)))


def step_size_activity(step_sizes: torch.Tensor, n_features: int | None = None, *,
                       log_space: bool = False) -> torch.Tensor:
    """(F,): mean over output units of |step size| of the input layer's (H_0, F) step sizes.

    A 0-d step size is repeated ``n_features`` times. ``log_space=True`` (IDBD's beta = log alpha)
    exponentiates first.
    """
    s = _f64(step_sizes)
    if log_space:
        s = s.exp()
    if s.ndim == 0 and n_features is None:
        raise ValueError("a scalar step size needs n_features")
    return _mean(abs(s), 0, n_features or 0)


def trace_activity(traces: torch.Tensor) -> torch.Tensor:
    """(F,): mean over output units of |eligibility trace| of the input layer, traces (H_0, F)."""
    return _mean(abs(_f64(traces)), 0, 0)


def normalizer_stats(norm_mean: torch.Tensor, norm_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (F,), std (F,)) with std = sqrt(var + 1e-8)."""
    return _f64(norm_mean), _std(_f64(norm_var))


def normalized_weight_relevance(relevance: torch.Tensor, norm_var: torch.Tensor) -> torch.Tensor:
    """The reference's field: relevance * sqrt(var + 1e-8), (n_heads, F)."""
    return _f64(relevance) * _std(_f64(norm_var))


def per_raw_unit_relevance(relevance: torch.Tensor, norm_var: torch.Tensor) -> torch.Tensor:
    """Relevance per raw input unit: relevance / (sqrt(var) + 1e-8), (n_heads, F)."""
    return _f64(relevance) / _raw_divisor(_f64(norm_var))


def head_reliance(head_weights: torch.Tensor) -> torch.Tensor:
    """|w_h| element-wise, (n_heads, H_last)."""
    return abs(_f64(head_weights))


def head_mean_step_size(head_step_sizes: torch.Tensor, n_heads: int | None = None) -> torch.Tensor:
    """(n_heads,): mean |step size| of each head's weights; a 0-d step size is repeated n_heads times."""
    s = _f64(head_step_sizes)
    if s.ndim == 0 and n_heads is None:
        raise ValueError("a scalar step size needs n_heads")
    return _mean(abs(s), 1, n_heads or 0)


def adam_effective_step_size(exp_avg_sq: torch.Tensor, step: float, lr: float, beta2: float,
                             eps: float) -> torch.Tensor:
    """Adam's per-weight effective step size lr / (sqrt(v̂) + eps), v̂ = v / (1 - beta2^t) (float64)."""
    t = float(step)
    if not t > 0:
        raise MissingInputError(f"Adam state has step {t}: no update has been taken, no step size")
    v_hat = _f64(exp_avg_sq) / (1.0 - float(beta2) ** t)
    return float(lr) / (v_hat.sqrt() + float(eps))


# --------------------------------------------------------------------------------------------------
# The learner's state.

class _Arrays:
    """float64 numpy copies of a LearnerState, made once (the fast tier's working set). Every quantity
    that enters the formulas only through |.| (weights, step sizes, traces) is stored as its absolute
    value: the cast and the abs are one numpy pass."""

    __slots__ = ("ws", "wh", "mean", "var", "s_in", "s_head", "tr_in")

    def __init__(self, s: "LearnerState"):
        self.ws = tuple(_np64(w, True) for w in s.trunk_weights)
        self.wh = _np64(s.head_weights, True)
        self.mean = _np64(s.norm_mean, False)
        self.var = _np64(s.norm_var, False)
        self.s_in = _np64(s.input_step_sizes, True)
        self.s_head = _np64(s.head_step_sizes, True)
        self.tr_in = _np64(s.input_traces, True)


def _np64(t, absolute: bool):
    """A float64 numpy copy of t (a tensor or an array; or of |t|) that never aliases its memory."""
    if t is None:
        return None
    if isinstance(t, np.ndarray) or np.isscalar(t):
        a = t
    else:  # a torch tensor (torch is imported by whoever made it)
        import torch

        if t.requires_grad:
            t = t.detach()
        a = t.numpy() if t.dtype in (torch.float32, torch.float64) and t.device.type == "cpu" \
            else t.to("cpu", torch.float64).numpy()
    x = np.array(a, dtype=np.float64)  # always a copy
    return np.abs(x, out=x) if absolute else x


@dataclass(frozen=True, eq=False)
class LearnerState:
    """What the state-only tier needs, all (out, in) like torch weights.

    trunk_weights: trunk Linear weights [(H_0, F), (H_1, H_0), ...]; empty for no trunk.
    head_weights: (n_heads, H_last), or (n_heads, F) with no trunk.
    norm_mean, norm_var: (F,) online normaliser statistics, or None.
    input_step_sizes: step sizes of the input layer (trunk 0, or the heads with no trunk), same shape
        as its weight or 0-d (one shared step size); already exponentiated for IDBD; or None.
    head_step_sizes: (n_heads, H_last) or 0-d, or None.
    input_traces: eligibility traces of the input layer, same shape as its weight, or None.
    step_size_kind: where the step sizes came from ("step_sizes", "log_step_sizes", "adam",
        "step_size"; "<input kind>+<head kind>" when the two layers' come from different sources, as
        alberta-framework's hybrid optimiser: LMS trunk, Autostep heads), or None. Provenance only.
    Arrays may be torch tensors or numpy arrays.

    Immutable: ``arrays`` caches float64 numpy copies on first use, so mutate nothing in place.
    """

    trunk_weights: Sequence[torch.Tensor]
    head_weights: torch.Tensor
    norm_mean: torch.Tensor | None = None
    norm_var: torch.Tensor | None = None
    input_step_sizes: torch.Tensor | None = None
    head_step_sizes: torch.Tensor | None = None
    input_traces: torch.Tensor | None = None
    step_size_kind: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "trunk_weights", tuple(self.trunk_weights))
        shapes = [tuple(w.shape) for w in self.trunk_weights] + [tuple(self.head_weights.shape)]
        if any(len(s) != 2 for s in shapes):
            raise InputError(f"relevance: every weight must be 2-D (out, in); got shapes {shapes}")
        for (o, _), (_, i) in zip(shapes[:-1], shapes[1:]):
            if o != i:
                raise InputError(f"relevance: weight shapes do not chain (out, in): {shapes}")
        n_f, w_in = shapes[0][1], shapes[0]
        for name, want in (("norm_mean", (n_f,)), ("norm_var", (n_f,)), ("input_step_sizes", w_in),
                           ("head_step_sizes", shapes[-1]), ("input_traces", w_in)):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != want and not (t.ndim == 0 and "step" in name):
                raise InputError(f"relevance: {name} has shape {tuple(t.shape)}, expected {want}"
                                 + (" or a scalar" if "step" in name else ""))

    @property
    def n_features(self) -> int:
        return int((self.trunk_weights[0] if self.trunk_weights else self.head_weights).shape[1])

    @property
    def n_heads(self) -> int:
        return int(self.head_weights.shape[0])

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(int(w.shape[0]) for w in self.trunk_weights)

    @cached_property
    def arrays(self) -> _Arrays:
        return _Arrays(self)


def _canonical_param_names(sd: Mapping[str, Any]) -> list[str]:
    """MultiHeadLearner.named_parameters() order: trunk.0.weight, trunk.0.bias, ..., heads.*."""
    idx = sorted(int(m.group(1)) for k in sd if (m := _TRUNK_RE.match(k)))
    names = []
    for i in idx:
        names += [n for n in (f"trunk.{i}.weight", f"trunk.{i}.bias") if n in sd]
    return names + [n for n in ("heads.weight", "heads.bias") if n in sd]


def _adam_step_sizes(optimizer_state: Mapping, names: Sequence[str],
                     param_names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Effective Adam step sizes for ``names`` from a torch optimizer state_dict.

    The state may be keyed by parameter index (torch's own format; index i is param_names[i]) or by
    parameter name. AMSGrad groups use max_exp_avg_sq.
    """
    try:
        state, groups = optimizer_state["state"], optimizer_state["param_groups"]
    except (KeyError, TypeError) as err:
        raise CheckpointError("optimizer state needs 'state' and 'param_groups' (torch format)") from err
    out = {}
    for name in names:
        keys = [name] + ([param_names.index(name)] if name in param_names else [])
        key = next((k for k in keys if k in state), None)
        group = next((g for g in groups if key is not None and key in g.get("params", ())), None)
        if key is None or group is None:
            continue
        st = state[key]
        v = st.get("max_exp_avg_sq") if group.get("amsgrad") else None
        v = st.get("exp_avg_sq") if v is None else v
        if v is None or "step" not in st:
            raise CheckpointError(f"optimizer state of {name!r} has no exp_avg_sq/step: not Adam-like")
        lr = group["lr"]
        out[name] = adam_effective_step_size(v, float(st["step"]), float(lr), float(group["betas"][1]),
                                             float(group["eps"]))
    return out


def learner_state_from_state_dict(sd: Mapping[str, torch.Tensor], optimizer_state: Mapping | None = None,
                                  step_size_kind: str = "auto",
                                  param_names: Sequence[str] | None = None) -> LearnerState:
    """Build a LearnerState from a MultiHeadLearner state dict plus optional learner extras.

    sd: ``trunk.<i>.weight``, ``heads.weight`` (required), ``norm_mean``/``norm_var`` (optional) and the
        extras of fadiag.models.multihead: ``step_sizes.<param>`` (per weight), ``log_step_sizes.<param>``
        (IDBD, exponentiated here), ``step_size`` (scalar), ``traces.<param>``. Other keys are ignored.
    optimizer_state: a torch Adam/AdamW ``state_dict()``; per-weight step size lr / (sqrt(v̂) + eps),
        v̂ = v / (1 - beta2^t). Its parameter indices follow ``param_names`` (default: the canonical
        MultiHeadLearner.named_parameters() order, i.e. the optimizer was built on model.parameters()).
    step_size_kind: "auto" takes, for each layer (the input layer and the heads) separately, the first
        present of step_sizes, log_step_sizes, adam, step_size (so a hybrid learner, LMS trunk with a
        scalar ``step_size`` and Autostep heads with ``step_sizes.heads.weight``, keeps both); a named
        kind that is absent raises MissingInputError; "none" ignores step sizes.
    Values may be torch tensors or numpy arrays (the state-only tier then needs no torch).
    """
    if step_size_kind not in STEP_SIZE_KINDS:
        raise InputError(f"step_size_kind {step_size_kind!r} is not one of {', '.join(STEP_SIZE_KINDS)}")
    if "heads.weight" not in sd:
        raise CheckpointError("state dict has no 'heads.weight': not a multihead learner")
    idx = sorted(int(m.group(1)) for k in sd if (m := _TRUNK_RE.match(k)))
    if idx != list(range(len(idx))):
        raise CheckpointError(f"trunk layers are not numbered 0..n-1: found {idx}")
    trunk = [sd[f"trunk.{i}.weight"] for i in idx]
    in_name = "trunk.0.weight" if trunk else "heads.weight"
    names = (in_name, "heads.weight") if trunk else (in_name,)

    def per_weight(prefix: str):
        got = {n: sd[prefix + n] for n in names if prefix + n in sd}
        return got or None

    def source(k: str):
        if k == "step_sizes":
            return per_weight("step_sizes.")
        if k == "log_step_sizes":
            got = per_weight("log_step_sizes.")
            return got and {n: np.exp(_np64(v, False)) for n, v in got.items()}
        if k == "adam":
            return optimizer_state is not None and _adam_step_sizes(
                optimizer_state, names, list(param_names) if param_names else _canonical_param_names(sd))
        return {n: np.asarray(_np64(sd["step_size"], False)).reshape(()) for n in names} \
            if "step_size" in sd else None

    found: dict[str, Any] = {}
    kinds = ("step_sizes", "log_step_sizes", "adam", "step_size") if step_size_kind == "auto" \
        else (() if step_size_kind == "none" else (step_size_kind,))
    layer_kind: dict[str, str] = {}
    for k in kinds:
        got = source(k) or {}
        for n in names:
            if n not in found and n in got:
                found[n], layer_kind[n] = got[n], k
        if len(found) == len(names):
            break
    kind = None
    if layer_kind:
        ks = [layer_kind[n] for n in names if n in layer_kind]
        kind = ks[0] if len(set(ks)) == 1 else "+".join(ks)
    if step_size_kind not in ("auto", "none") and not found:
        raise MissingInputError(f"step_size_kind={step_size_kind!r} but the checkpoint has no such step sizes")
    return LearnerState(
        trunk_weights=trunk,
        head_weights=sd["heads.weight"],
        norm_mean=sd.get("norm_mean"),
        norm_var=sd.get("norm_var"),
        input_step_sizes=found.get(in_name),
        head_step_sizes=found.get("heads.weight"),
        input_traces=sd.get(f"traces.{in_name}"),
        step_size_kind=kind,
    )


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
    """Jacobian d pred_h / d x_raw at one observation, (n_heads, F), through the normaliser.

    model: (B, F) -> (B, n_heads); x_raw: (F,) or (1, F). Reverse mode (torch.func.jacrev: one
    vector-Jacobian product per head, as n_heads < F), in eval mode; parameter .grad untouched.
    """
    import torch

    x = x_raw.detach().reshape(-1)
    with _EvalMode(model), torch.enable_grad():
        return torch.func.jacrev(lambda v: model(v.unsqueeze(0)).squeeze(0))(x).detach()


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
