"""Checkpoints of learning-rule libraries (BioTorch's FA / DFA / uSF / brSF / frSF layers), read by layout.

BioTorch replaces every ``nn.Linear`` / ``nn.Conv2d`` of a model by a subclass whose backward uses a
feedback tensor instead of the forward weight; the feedback is a parameter, so the state dict carries it as
``<layer>.weight_backward`` (and ``<layer>.bias_backward``, which no BioTorch backward reads):

- FA family (``fa``, ``usf``, ``brsf``, ``frsf``): ``weight_backward`` has the weight's shape; the gradient
  at the layer's input is ``grad_out @ B`` (Linear) or the transposed convolution with ``B`` (Conv2d).
  uSF uses ``c * sign(W)``, frSF ``|B| * sign(W)``, brSF redraws ``|B|`` at every forward (the stored matrix
  is the last draw) — each rule applies this to the weight at the time of the forward.
- DFA: ``weight_backward`` is ``(C, in_features)`` (Linear) or ``(C, in_channels, kh, kw)`` (Conv2d), C the
  output layer's width; the gradient at the layer's input is ``e @ B`` with ``e = dL/d(model output)``
  broadcast to every layer (a legacy module backward hook that needs ``layer.loss_gradient`` set by
  BioTorch's ``BioModule.forward``: without it, autograd crashes).

So autograd through these layers gives the FA/DFA signal, not backprop: the BP gradient floor (b) is off by
28-73% on the models we measured. fadiag computes (b) on the **BP twin**: the same architecture built from
plain ``nn.Linear`` / ``nn.Conv2d`` with the same forward weights, the feedback tensors dropped from the
state dict and kept for ``--signal dfa|fa|native`` (:mod:`fadiag.compat.biotorch_native` computes the
library's own signal). BioTorch itself is never imported (it pulls jupyter/tensorboard); the layout is all
fadiag needs. See docs/upstream.md, "Learning-rule libraries (BioTorch)".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..errors import InputError

WEIGHT_SUFFIX = ".weight_backward"
BACKWARD_SUFFIXES = (WEIGHT_SUFFIX, ".bias_backward")
FA_RULES = ("fa", "usf", "brsf", "frsf")
RULES = FA_RULES + ("dfa",)
#: Share of weight entries whose feedback has the weight's sign above which a layer counts as sign-concordant
#: (uSF / brSF / frSF): a random FA matrix agrees on about half; the last optimiser step after the forward
#: that wrote the matrix flips a few signs of W, never 1%.
SIGN_CONCORDANT = 0.99


@dataclass(frozen=True)
class FeedbackLayer:
    """One layer with a feedback tensor: its state-dict path, kind ("linear" | "conv2d"), rule and shapes."""

    name: str
    kind: str
    rule: str
    weight_shape: tuple
    feedback_shape: tuple


@dataclass(frozen=True)
class LearningRuleInfo:
    """What :func:`detect_learning_rule` found. ``rule`` is None when the state dict has no feedback."""

    rule: str | None
    layers: tuple = ()
    n_classes: int | None = None
    wrapper_prefix: str = ""
    note: str = ""

    @property
    def detected(self) -> bool:
        return self.rule is not None

    @property
    def layer_names(self) -> list:
        return [f.name for f in self.layers]

    def to_dict(self) -> dict:
        """JSON-ready, for a report's ``extra`` (keys: rule, layers, n_classes, wrapper_prefix, note)."""
        return {"rule": self.rule, "n_classes": self.n_classes, "wrapper_prefix": self.wrapper_prefix,
                "layers": [{"name": f.name, "kind": f.kind, "rule": f.rule, "weight_shape": list(f.weight_shape),
                            "feedback_shape": list(f.feedback_shape)} for f in self.layers],
                "note": self.note}


def _layer_of(key: str) -> str:
    return key[: -len(WEIGHT_SUFFIX)] if key != WEIGHT_SUFFIX[1:] else ""


def _finite_tensor(t, what: str, source, *, finite: bool = True):
    """``t`` if it is a floating tensor (and, with ``finite``, has no NaN/Inf); else InputError. Forward
    weights are not checked for finiteness here: a NaN network is the audit's to flag, not bad input."""
    import torch

    if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
        raise InputError(f"{what} is {type(t).__name__}, not a floating-point tensor", source=source)
    if finite and not bool(torch.isfinite(t).all()):
        raise InputError(f"{what} has {int((~torch.isfinite(t)).sum())} NaN/Inf entries: the feedback the "
                         "library trained with is lost", source=source)
    return t


def _fa_variant(w, b) -> str:
    """fa | usf | brsf | frsf from the values of a weight-shaped feedback B (see the module docstring)."""
    import torch

    both = (w != 0) & (b != 0)
    if not bool(both.any()):
        return "fa"
    agree = float((torch.sign(w[both]) == torch.sign(b[both])).double().mean())
    mixed_w = bool((w > 0).any() and (w < 0).any())
    if bool((b >= 0).all()) and mixed_w and agree < SIGN_CONCORDANT:
        return "frsf"  # stores |B|; its backward uses |B| * sign(W)
    if agree < SIGN_CONCORDANT:
        return "fa"
    mag = b[b != 0].abs().double()
    return "usf" if float(mag.max() - mag.min()) <= 1e-5 * float(mag.max()) else "brsf"


def _classify(name: str, w, b, bias_b, source) -> tuple:
    """(kind, "fa" | "dfa" | "either") for one layer; bad shapes are InputError. DFA's ``bias_backward`` is
    (C, in_features[/channels]), FA's the bias's shape: it settles the case C == out_features."""
    kind = {2: "linear", 4: "conv2d"}.get(w.dim())
    where = f"{name or '<root>'}{WEIGHT_SUFFIX}"
    if kind is None or b.dim() != w.dim():
        raise InputError(f"{where} {tuple(b.shape)} beside weight {tuple(w.shape)}: feedback layers are Linear "
                         "(2-D) or Conv2d (4-D) with feedback of the same rank", source=source)
    if b.shape[1:] != w.shape[1:]:
        raise InputError(f"{where} {tuple(b.shape)} does not fit weight {tuple(w.shape)}: FA feedback has the "
                         "weight's shape, DFA feedback (n_classes, in_features[, kh, kw])", source=source)
    shape = "either" if b.shape[0] == w.shape[0] else "dfa"
    if bias_b is not None and hasattr(bias_b, "dim"):
        by_bias = {1: "fa", 2: "dfa"}.get(bias_b.dim())
        if by_bias is None or (shape == "dfa" and by_bias == "fa"):
            raise InputError(f"{name or '<root>'}.bias_backward {tuple(bias_b.shape)} fits neither FA (the bias's "
                             f"shape) nor DFA ((n_classes, {w.shape[1]})) beside {where} {tuple(b.shape)}",
                             source=source)
        shape = by_bias
    return kind, shape


def _prefix(keys) -> str:
    keys = list(keys)
    return "module." if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys) else ""


def _note(rule: str, layers: tuple) -> str:
    names = ", ".join(f.name or "<root>" for f in layers[:4]) + (", ..." if len(layers) > 4 else "")
    signal = "dfa" if rule == "dfa" else "fa"
    return (f"BioTorch-style {rule.upper()} layers ({len(layers)} with *.weight_backward: {names}): autograd "
            f"through them gives the {rule.upper()} signal, not backprop. (b) is computed on a BP twin: plain "
            "Linear/Conv2d with the same forward weights; the feedback tensors are kept for "
            f"--signal {signal} / native.")


def detect_learning_rule(state_dict: dict, *, source: str | None = None) -> LearningRuleInfo:
    """Find ``*.weight_backward`` keys: which layers, which rule their shapes (and, for the FA family, values)
    suggest, DFA's C, and the note for the report. Feedback without its weight, of a shape that fits neither
    rule, non-finite, or a model mixing FA- and DFA-shaped feedback is InputError."""
    keys = [k for k in state_dict if isinstance(k, str) and (k.endswith(WEIGHT_SUFFIX) or k == WEIGHT_SUFFIX[1:])]
    if not keys:
        return LearningRuleInfo(rule=None)
    found = []
    for k in keys:
        name = _layer_of(k)
        wkey = f"{name}.weight" if name else "weight"
        if wkey not in state_dict:
            raise InputError(f"{k} has no forward weight {wkey!r} beside it", source=source)
        w = _finite_tensor(state_dict[wkey], wkey, source, finite=False)
        b = _finite_tensor(state_dict[k], k, source)
        bias_b = state_dict.get(f"{name}.bias_backward" if name else "bias_backward")
        found.append((name, w, b) + _classify(name, w, b, bias_b, source))
    shapes = {shape for *_, shape in found}
    if {"fa", "dfa"} <= shapes:
        raise InputError("the state dict mixes FA-layout and DFA-layout feedback layers; BioTorch converts a "
                         "whole model with one rule", source=source)
    if "dfa" in shapes:
        cs = {int(b.shape[0]) for _, _, b, _, _ in found}
        if len(cs) != 1:
            raise InputError(f"DFA feedback must share one n_classes (the output layer's width); the layers' "
                             f"first dims are {sorted(cs)} (FA- and DFA-shaped feedback mixed?)", source=source)
        n_classes, rules = cs.pop(), ["dfa"] * len(found)
    else:
        n_classes, rules = None, [_fa_variant(w, b) for _, w, b, _, _ in found]
    layers = tuple(FeedbackLayer(name, kind, r, tuple(w.shape), tuple(b.shape))
                   for (name, w, b, kind, _), r in zip(found, rules))
    rule = rules[0] if len(set(rules)) == 1 else "fa"  # FA-family variants mixed: plain FA names them all
    return LearningRuleInfo(rule=rule, layers=layers, n_classes=n_classes, wrapper_prefix=_prefix(state_dict),
                            note=_note(rule, layers))


def bp_twin_state_dict(state_dict: dict, *, strip_prefix: str | None = None, source: str | None = None):
    """``(plain_sd, feedback)``: the state dict without its ``*_backward`` tensors (it loads into the same
    architecture built from plain Linear/Conv2d: the BP twin) and ``{layer: weight_backward}`` (the raw
    tensors; :func:`effective_feedback` applies the rule). ``strip_prefix`` (e.g. the info's
    ``wrapper_prefix``, BioModule's ``module.``) is removed from keys and layer names that start with it."""
    detect_learning_rule(state_dict, source=source)  # validates the layout
    cut = len(strip_prefix or "")

    def rename(k: str) -> str:
        return k[cut:] if cut and k.startswith(strip_prefix) else k

    plain, feedback = {}, {}
    for k, v in state_dict.items():
        if isinstance(k, str) and (k.endswith(BACKWARD_SUFFIXES) or k in ("weight_backward", "bias_backward")):
            if k.endswith(WEIGHT_SUFFIX) or k == "weight_backward":
                feedback[rename(_layer_of(k)) if _layer_of(k) else ""] = v
            continue
        plain[rename(k) if isinstance(k, str) else k] = v
    return plain, feedback


def split_for_model(state_dict: dict, model_keys, *, source: str | None = None):
    """``(plain_sd, feedback, info, prefix)`` for a plain model whose state-dict keys are ``model_keys``: the
    BP-twin state dict and feedback of :func:`bp_twin_state_dict`, with the wrapper prefix (BioModule's
    ``module.``) stripped only when the stripped keys match the model and the unstripped do not. A state dict
    without feedback comes back as it is (``info.detected`` False)."""
    info = detect_learning_rule(state_dict, source=source)
    if not info.detected:
        return dict(state_dict), {}, info, ""
    keys = set(model_keys)
    plain, feedback = bp_twin_state_dict(state_dict, source=source)
    if info.wrapper_prefix and set(plain) != keys:
        stripped, fb = bp_twin_state_dict(state_dict, strip_prefix=info.wrapper_prefix, source=source)
        if set(stripped) == keys:
            return stripped, fb, info, info.wrapper_prefix
    return plain, feedback, info, ""


def effective_feedback(info: LearningRuleInfo, plain_sd: dict, feedback: dict, *, prefix: str = "") -> dict:
    """``{layer: B}`` the library's backward uses with the current forward weights: FA and DFA the stored
    matrix, uSF ``c * sign(W)`` (c its stored magnitude), frSF ``|B| * sign(W)``, brSF the stored (last) draw.
    ``prefix``: what was stripped from ``plain_sd``/``feedback`` names relative to ``info`` (e.g. "module.")."""
    import torch

    out = {}
    for f in info.layers:
        name = f.name[len(prefix):] if prefix and f.name.startswith(prefix) else f.name
        b = feedback[name]
        w = plain_sd[f"{name}.weight" if name else "weight"]
        if f.rule == "usf":
            b = b.abs().max() * torch.sign(w)
        elif f.rule == "frsf":
            b = b.abs() * torch.sign(w)
        out[name] = b.detach().clone()
    return out


def _matrices(feedback: dict, layer_names, n: int, what: str, source) -> list:
    names = list(layer_names)
    if len(names) != n:
        raise InputError(f"{what}: {len(names)} feedback layers for {n} stream states h_0..h_{n - 1} "
                         f"(layers: {', '.join(names) or 'none'})", source=source)
    out = []
    for name in names:
        if name not in feedback:
            raise InputError(f"{what}: no feedback for layer {name!r} (have: {', '.join(feedback) or 'none'})",
                             source=source)
        b = _finite_tensor(feedback[name], f"{name}{WEIGHT_SUFFIX}", source)
        if b.dim() != 2:
            raise InputError(f"{what}: {name}{WEIGHT_SUFFIX} is {tuple(b.shape)}; only Linear feedback (2-D) fits "
                             "this layout (a Conv2d kernel's signal needs --signal native)", source=source)
        out.append(b.detach().clone())
    return out


def default_layer_names(feedback: dict, width: int) -> list:
    """The feedback layers that consume a width-``width`` state (Linear B with ``in_features == width``), in
    state-dict order: for an MLP, the layers fed by h_0..h_L."""
    return [n for n, b in feedback.items() if getattr(b, "dim", lambda: 0)() == 2 and b.shape[1] == width]


def dfa_feedback(feedback: dict, layer_names, n_layers_plus_one: int, width: int, *,
                 source: str | None = None) -> list:
    """``[B_0..B_L]``, B_l ``(C, width)``: the layout of ``--signal dfa`` (``training.make_feedback``,
    ``diagnostics.credit.dfa_signals``: a_l = e @ B_l). ``layer_names[l]`` is the layer that consumes h_l
    (None: :func:`default_layer_names`); BioTorch's DFA Linear feedback is already (C, in_features)."""
    names = default_layer_names(feedback, width) if layer_names is None else layer_names
    mats = _matrices(feedback, names, n_layers_plus_one, "--signal dfa", source)
    cs = {int(b.shape[0]) for b in mats}
    if len(cs) != 1 or any(b.shape[1] != width for b in mats):
        raise InputError(f"--signal dfa needs (n_classes, {width}) matrices, got "
                         f"{[tuple(b.shape) for b in mats]}", source=source)
    return mats


def fa_feedback(feedback: dict, layer_names, n_layers_plus_one: int, width: int, *,
                source: str | None = None) -> dict:
    """``{'top': (C, width), 'layers': [B_0..B_{L-1}]}``, B_l ``(width, width)``: the layout of ``--signal fa``
    (a_L = e @ top, a_l = a_(l+1) @ B_l^T). ``layer_names[l]`` consumes h_l; its BioTorch feedback
    ``(d_(l+1), d_l)`` is B_l^T, and the last one's ``(C, d_L)`` is ``top``. This chain has no activation
    derivatives: it is the library's signal only where the layers between stream states are linear."""
    names = default_layer_names(feedback, width) if layer_names is None else layer_names
    mats = _matrices(feedback, names, n_layers_plus_one, "--signal fa", source)
    if any(b.shape != (width, width) for b in mats[:-1]) or mats[-1].shape[1] != width:
        raise InputError(f"--signal fa needs ({width}, {width}) feedback between stream states and "
                         f"(n_classes, {width}) on top, got {[tuple(b.shape) for b in mats]}", source=source)
    return {"top": mats[-1], "layers": [b.T.contiguous() for b in mats[:-1]]}


def _needs_twin(m) -> bool:
    """A Linear/Conv2d that carries learning-rule feedback (``weight_backward``). A Linear subclass with its own
    forward but no feedback (masked, weight-standardised, LoRA...) is left alone: replacing it would change the
    function the network computes."""
    import torch.nn as nn

    return isinstance(m, (nn.Linear, nn.Conv2d)) and hasattr(m, "weight_backward")


def _plain_twin(m):
    import torch.nn as nn

    if isinstance(m, nn.Conv2d):
        p = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                      bias=m.bias is not None, padding_mode=m.padding_mode, device="meta")
    else:
        p = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
    p.weight, p.bias = m.weight, m.bias  # the same Parameter objects: the forward weights are shared
    p.train(m.training)
    return p


def needs_bp_twin(model) -> bool:
    """Whether :func:`bp_twin_module` would change anything (a feedback layer or a module backward hook)."""
    return any(_needs_twin(m) or getattr(m, "_backward_hooks", None) or getattr(m, "_backward_pre_hooks", None)
               for m in model.modules())


def bp_twin_module(model):
    """``(twin, changes)``: a copy of ``model`` that shares its parameters and buffers, with every Linear /
    Conv2d that carries ``weight_backward`` (a learning-rule layer) replaced by a plain
    ``nn.Linear`` / ``nn.Conv2d`` on the same weights and every module backward hook cleared, so autograd
    gives BP. ``changes`` lists what was replaced or cleared, for the report. ``model`` is left as it was."""
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    twin = copy.deepcopy(model, memo)
    changes = []
    for name, m in list(twin.named_modules()):
        for attr in ("_backward_hooks", "_backward_pre_hooks"):
            hooks = getattr(m, attr, None)
            if hooks:
                changes.append(f"{name or '<root>'}: {len(hooks)} backward hook(s) cleared")
                hooks.clear()
        if hasattr(m, "_is_full_backward_hook"):
            m._is_full_backward_hook = None
        if _needs_twin(m):
            if not name:
                raise InputError("the model itself is a feedback layer; wrap it in a module to audit it",
                                 source="model")
            parent, _, leaf = name.rpartition(".")
            plain = _plain_twin(m)
            setattr(twin.get_submodule(parent) if parent else twin, leaf, plain)
            changes.append(f"{name}: {type(m).__module__}.{type(m).__name__} -> plain {type(plain).__name__}")
    return twin, changes


def report_extra(subject) -> dict:
    """The report's {"learning_rule": ...} when the checkpoint carries learning-rule feedback, and {"bp_twin":
    [...]} when the model was changed into its BP twin (layers replaced, backward hooks cleared): the numbers are
    the twin's (docs/upstream.md); {} otherwise."""
    out = {}
    rule = subject.extras.get("learning_rule")
    if rule is not None:
        out["learning_rule"] = rule.to_dict()
    if subject.extras.get("bp_twin"):
        out["bp_twin"] = list(subject.extras["bp_twin"])
    return out
