"""The learner's state for the relevance tiers (docs/science.md §4): ``LearnerState`` and how it is read from a
MultiHeadLearner state dict plus its learner extras and optimiser state. numpy only at import: the arrays may
be torch tensors or numpy arrays (a JAX user need not install torch). ``fadiag.diagnostics.relevance``
re-exports every public name here."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from fadiag.errors import CheckpointError, InputError, MissingInputError

STEP_SIZE_KINDS = ("auto", "step_sizes", "log_step_sizes", "adam", "step_size", "none")

_TRUNK_RE = re.compile(r"^trunk\.(\d+)\.weight$")


def _f64(t) -> torch.Tensor:
    import torch

    return torch.as_tensor(t).detach().to("cpu", torch.float64)



def adam_effective_step_size(exp_avg_sq: torch.Tensor, step: float, lr: float, beta2: float,
                             eps: float) -> torch.Tensor:
    """Adam's per-weight effective step size lr / (sqrt(v̂) + eps), v̂ = v / (1 - beta2^t) (float64)."""
    t = float(step)
    if not t > 0:
        raise MissingInputError(f"Adam state has step {t}: no update has been taken, no step size")
    v_hat = _f64(exp_avg_sq) / (1.0 - float(beta2) ** t)
    return float(lr) / (v_hat.sqrt() + float(eps))



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
