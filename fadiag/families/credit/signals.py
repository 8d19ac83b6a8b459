"""Where the credit signal a_l comes from (docs/science.md §2, "where a_l comes from"): one provider per
learning rule, registered in :data:`PROVIDERS`.

Every provider reads the ONE float64 pass of ``fadiag credit`` (:class:`CreditPass`) and returns
(a_0..a_L as per-sample (B, d) float64 tensors, a one-line description of where they came from). An input
a provider needs and cannot find is bad input (MissingInputError / InputError, exit 2): fadiag never
redraws feedback matrices or substitutes a value net (pitfalls 4 and 6.5), so there is no N/A signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ...errors import InputError, MissingInputError


@dataclass(frozen=True)
class CreditPass:
    """The first eval batch through the float64 copy of the model (fadiag.stream.settled_pass, loss summed
    over samples). ``hs``: full states h_l; ``hs_flat`` / ``g_sum``: the per-sample (pooled) h_l and
    d(summed per-sample loss)/dh_l; ``view``: the settled float64 view."""

    subject: Any
    view: Any
    x: Any
    y: Any
    logits: Any
    hs: list
    hs_flat: list
    g_sum: list

    @property
    def n(self) -> int:
        return len(self.hs)


@dataclass(frozen=True)
class SignalProvider:
    """One learning rule's credit signal: ``needs`` says what it reads besides the pass (for docs and errors);
    ``build(pass, seed, tensors_path)`` -> (signals, source); ``hint``: its gloss in ``--signal``'s help."""

    name: str
    needs: str
    build: Callable[..., tuple]
    hint: str = ""


def _bp(p: CreditPass, seed: int, tensors_path):
    return p.g_sum, "BP gradient of the summed per-sample CE"


def _random(p: CreditPass, seed: int, tensors_path):
    import torch

    gen = torch.Generator().manual_seed(seed + 7919)
    return ([torch.randn(g.shape, generator=gen, dtype=torch.float64) for g in p.g_sum],
            f"Gaussian control, seed {seed + 7919}")


def _feedback(p: CreditPass, signal: str):
    """The training-time feedback matrices under credit.feedback: a list of tensors, or the dict FA reads."""
    import torch

    key, extras, path = p.subject.spec.credit.feedback, p.subject.extras, p.subject.path
    fb = extras.get(key)
    if isinstance(fb, torch.Tensor):
        fb = [fb[i] for i in range(fb.shape[0])] if fb.dim() == 3 else None
    elif isinstance(fb, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in fb):
        fb = list(fb)
    elif fb is not None and not isinstance(fb, dict):
        raise InputError(f"checkpoint entry {key!r} is not a tensor, list of tensors or dict", source=path)
    rule = extras.get("learning_rule")
    if fb is None and rule is not None and signal in ("dfa", "fa"):
        from ...compat.biotorch import dfa_feedback, fa_feedback

        make = dfa_feedback if signal == "dfa" else fa_feedback
        fb = make(extras["learning_rule_feedback"], None, p.n, p.hs_flat[0].shape[1], source=path)
    if fb is None:  # a missing input is bad input (exit 2), never a redraw and never a report of N/As
        raise MissingInputError(f"--signal {signal}: no training-time feedback matrices under {key!r} in the "
                                "checkpoint (credit.feedback names the key); fadiag never redraws them, a fresh "
                                "B_l gives a meaningless Γ (docs/science.md §2, pitfall 4)", source=path)
    return fb


def _dfa(p: CreditPass, seed: int, tensors_path):
    from ...diagnostics.credit import dfa_signals

    key, path = p.subject.spec.credit.feedback, p.subject.path
    fb = _feedback(p, "dfa")
    if isinstance(fb, dict):
        raise InputError(f"{key!r} holds a dict; DFA needs a tensor (L+1, C, d) or a list", source=path)
    if len(fb) != p.n:
        raise InputError(f"{len(fb)} feedback matrices for {p.n} hidden states h_0..h_{p.n - 1}", source=path)
    try:
        signals = dfa_signals(p.logits, p.y, fb)
    except ValueError as e:
        raise InputError(str(e), source=path) from None
    return signals, f"DFA: e = softmax - onehot times the training-time B_l under {_where(p, key)}"


def _fa(p: CreditPass, seed: int, tensors_path):
    import torch

    from ...diagnostics.credit import fa_signals, output_error

    key, path, n = p.subject.spec.credit.feedback, p.subject.path, p.n
    fb = _feedback(p, "fa")
    if not (isinstance(fb, dict) and "top" in fb and "layers" in fb):
        raise InputError(f"FA needs {key!r} = {{'top': (C, d), 'layers': [B_0..B_{{L-1}}]}}", source=path)
    if len(fb["layers"]) != n - 1:
        raise InputError(f"FA needs {n - 1} layer matrices B_0..B_{n - 2}, got {len(fb['layers'])}", source=path)
    top = output_error(p.logits, p.y) @ fb["top"].to(torch.float64)
    try:
        signals = fa_signals(top, list(fb["layers"]))
    except ValueError as err_:
        raise InputError(str(err_), source=path) from None
    return signals, f"FA: a_L = e B_top, a_l = B_l a_(l+1), matrices under {_where(p, key)}"


def _where(p: CreditPass, key: str) -> str:
    return repr(key) if key in p.subject.extras else "the state dict's *.weight_backward"


def _native(p: CreditPass, seed: int, tensors_path):
    """The learning-rule library's own a_l: its backward rule (FA/DFA/sign-symmetric) with the checkpoint's
    *.weight_backward, run through the float64 view (docs/upstream.md, learning-rule libraries)."""
    import torch

    from ...compat.biotorch import effective_feedback
    from ...compat.biotorch_native import native_backward
    from ...stream import full_pass

    rule = p.subject.extras.get("learning_rule")
    if rule is None:
        raise MissingInputError("--signal native: the checkpoint has no learning-rule feedback (*.weight_backward)",
                                source=p.subject.path)
    eff = effective_feedback(rule, p.subject.state_dict, p.subject.extras["learning_rule_feedback"])
    with native_backward(p.view.model, {k: v.to(torch.float64) for k, v in eff.items()}, rule.rule):
        _, _, g_native, _, _ = full_pass(p.view, p.x, p.y, reduction="sum")
    return ([p.view.pool_grad(g).to(torch.float64) for g in g_native],
            f"native {rule.rule.upper()}: the library's own backward rule with the checkpoint's *.weight_backward")


def value_net(subject, key: str | None):
    """Build the value net stored under ``key`` in float64 (None when the key is unset or absent: N/A, never a
    fallback)."""
    from ...checkpoint import find_state_dict
    from ...models import build_model
    from ...subject import check_state_dict

    cs = subject.spec.credit
    if not key or key not in subject.extras:
        return None
    sd, _ = find_state_dict(subject.extras[key], "auto", "", source=f"{subject.path}:{key}")
    net = build_model(cs.value_arch, cs.value_args, origin=subject.spec.origin, base_dir=subject.spec.base_dir)
    check_state_dict(net, sd, source=f"{subject.path}:{key}", spec_origin=subject.spec.origin)
    net.load_state_dict(sd)
    return net.double().to(subject.device).eval()


def _value(p: CreditPass, seed: int, tensors_path):
    import torch

    key = p.subject.spec.credit.value
    vnet = value_net(p.subject, key)
    if vnet is None:
        raise MissingInputError(f"--signal value: no value net under credit.value = {key!r} in the checkpoint; "
                                "fadiag never substitutes one (docs/science.md §2, pitfall 6.5)", source=p.subject.path)
    signals = []
    for l, h in enumerate(p.hs_flat):
        hv = h.clone().requires_grad_(True)
        with torch.enable_grad():
            (dv,) = torch.autograd.grad(vnet(hv, l).sum(), hv)
        signals.append(dv.detach())
    return signals, f"value net: a_l = dV(h_l, l)/dh_l, V under {key!r}"


def _read_tensors_file(path: str, n: int):
    """Precomputed a_l: a tensor (L+1, B, ...) under 'a' or 'signals', or keys a_0..a_L."""
    import torch

    from ...checkpoint import read_checkpoint

    c = read_checkpoint(path).content
    if isinstance(c, torch.Tensor):
        return [c[i] for i in range(c.shape[0])]
    if isinstance(c, dict):
        for k in ("a", "signals"):
            if isinstance(c.get(k), torch.Tensor):
                return [c[k][i] for i in range(c[k].shape[0])]
        if all(f"a_{i}" in c for i in range(n)):
            return [c[f"a_{i}"] for i in range(n)]
    raise InputError(f"expected a tensor 'a' (L+1, B, d) or keys a_0..a_{n - 1}", source=path)


def _tensors(p: CreditPass, seed: int, tensors_path):
    import torch

    path = tensors_path or p.subject.spec.resolve(p.subject.spec.credit.tensors)
    if not path:
        raise InputError("signal 'tensors' needs --tensors FILE (or credit.tensors in the spec)", source="--signal")
    raw = _read_tensors_file(path, p.n)
    B = p.x.shape[0]
    if any(t.dim() < 2 or t.shape[0] != B for t in raw):
        raise InputError(f"each a_l must be ({B}, ...) like h_l, got {[tuple(t.shape) for t in raw][:2]}", source=path)
    signals = [p.view.pool(t.to(torch.float64)) for t in raw]
    if len(signals) != p.n or any(s.shape != g.shape for s, g in zip(signals, p.g_sum)):
        raise InputError(f"signals must be {p.n} tensors shaped like h_l {[tuple(g.shape) for g in p.g_sum][:2]}...",
                         source=path)
    return signals, f"precomputed tensors from {path}"


#: name -> provider, in the order ``--signal`` lists them.
PROVIDERS = {s.name: s for s in (
    SignalProvider("bp", "nothing: the BP gradient of the pass", _bp),
    SignalProvider("dfa", "the training-time feedback matrices B_l (L+1, C, d) under credit.feedback", _dfa,
                   "training-time feedback in the checkpoint"),
    SignalProvider("fa", "{'top': (C, d), 'layers': [B_0..B_{L-1}]} under credit.feedback", _fa),
    SignalProvider("value", "a value net V(h, l) under credit.value (credit.value_arch, value_args)", _value,
                   "dV/dh of a stored value net"),
    SignalProvider("tensors", "precomputed a_l in --tensors FILE (or credit.tensors)", _tensors),
    SignalProvider("random", "nothing: a seeded Gaussian control (seed + 7919)", _random, "a control"),
    SignalProvider("native", "a learning-rule library's *.weight_backward feedback in the state dict", _native,
                   "a learning-rule library's own a_l from its *.weight_backward"),
)}


def signals_help() -> str:
    """``--signal``'s help, from :data:`PROVIDERS`."""
    return " | ".join(f"{n} ({p.hint})" if p.hint else n for n, p in PROVIDERS.items())


def check_spec(spec) -> None:
    """The spec's ``credit`` section (fadiag.registry: the credit family's spec_check)."""
    from ...errors import SpecError

    c, o = spec.credit, spec.origin
    if c.bridge_k < 1 or c.bridge_k > 4096 or c.bridge_lambda <= 0 or c.bridge_sigma < 0:
        raise SpecError("credit: need 1 <= bridge_k <= 4096, bridge_lambda > 0, bridge_sigma >= 0", source=o)
    if c.signal not in PROVIDERS:
        *head, last = PROVIDERS
        raise SpecError(f"credit.signal: expected {', '.join(head)} or {last}; got {c.signal!r}", source=o)
