"""Where the model's state dict is inside a checkpoint's content, and which tensors fadiag cannot read."""

from __future__ import annotations

from typing import Any

from ..errors import CheckpointError
from .raw import few as _few

#: Keys under which training scripts commonly store the model's state dict, in order of preference.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "model_state", "net", "module", "weights")
#: Prefixes wrappers add to every parameter name (Lightning, DataParallel, torch.compile).
AUTO_PREFIXES = ("model.", "module.", "_orig_mod.", "net.")


def find_state_dict(content: Any, key: str = "auto", strip_prefix: str = "auto", *, source: str | None = None,
                    dense: bool = True, model_keys=None):
    """Locate the model's state dict inside a checkpoint's content.

    key: "auto" (a flat dict of tensors, else the first of STATE_DICT_KEYS holding one) or an explicit
    key, dotted for nesting ("trainer.model"). strip_prefix: "auto" strips one wrapper prefix shared by
    every key (AUTO_PREFIXES), "" strips nothing, anything else is stripped where present. With
    ``model_keys`` (the model's own state-dict keys), "auto" strips a prefix only when the stripped keys match
    the model better than the unstripped ones (a model with ``self.net = Sequential(...)`` keeps its "net.").
    A whole nn.Module (``torch.save(model)``, only ever loaded under --trust-checkpoint) stands for its
    state_dict(). With ``dense`` (the default) every tensor must be a dense one with values (not meta, sparse,
    nested or quantized); ``fadiag inspect`` passes False, to say where the state dict is whatever it holds.
    Returns (state_dict, key_used).
    """
    import torch

    content = _as_state(content)
    if key != "auto":
        obj = content
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                raise CheckpointError(f"no state dict under key {key!r}", source=source)
            obj = obj[part]
        obj = _as_state(obj)
        if not isinstance(obj, dict):
            raise CheckpointError(f"checkpoint.state_dict {key!r} points at a {type(obj).__name__}, not a dict of "
                                  "tensors", source=source)
        sd, used = obj, key
    elif isinstance(content, dict) and _mostly_tensors(content):
        sd, used = content, ""
    else:
        sd, used = None, None
        if isinstance(content, dict):
            for k in STATE_DICT_KEYS:
                v = _as_state(content.get(k))
                if isinstance(v, dict) and _mostly_tensors(v):
                    sd, used = v, k
                    break
        if sd is None:
            keys = [_key_text(k) for k in list(content)[:8]] if isinstance(content, dict) else type(content).__name__
            raise CheckpointError(
                f"cannot find a state dict (looked for a dict of tensors or keys {', '.join(STATE_DICT_KEYS)}; "
                f"found {keys}); set checkpoint.state_dict in the spec",
                source=source,
            )
    odd = [_key_text(k) for k in sd if not isinstance(k, str)]
    if odd:
        raise CheckpointError(f"state dict{f' under {used!r}' if used else ''} has non-string keys ({_few(odd)}); "
                              "parameter names are strings", source=source)
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError("state dict holds no tensors", source=source)
    for k, v in sd.items() if dense else ():
        _check_dense(k, v, source)
    if strip_prefix == "auto":
        want = set(model_keys) if model_keys is not None else None
        for pre in AUTO_PREFIXES:
            if all(k.startswith(pre) for k in sd):
                stripped = {k[len(pre):]: v for k, v in sd.items()}
                if want is None or len(want & set(stripped)) > len(want & set(sd)):
                    sd = stripped
                break
    elif strip_prefix:
        sd = {(k[len(strip_prefix):] if k.startswith(strip_prefix) else k): v for k, v in sd.items()}
    return sd, used


def _as_state(obj):
    """A whole nn.Module (only loadable with --trust-checkpoint) stands for its state_dict()."""
    import torch

    return dict(obj.state_dict()) if isinstance(obj, torch.nn.Module) else obj


def _key_text(k) -> str:
    r = repr(k) if not isinstance(k, str) else k
    return r if len(r) <= 40 else r[:37] + "..."


def tensor_kind(t) -> str | None:
    """What keeps a tensor from being read as plain values: "meta", "nested", "sparse_coo", ..., or None."""
    if getattr(t, "is_nested", False):
        return "nested"
    if t.is_meta:
        return "meta"
    if t.layout.__class__.__name__ == "layout" and str(t.layout) != "torch.strided":
        return str(t.layout).replace("torch.", "")
    if t.is_quantized:
        return "quantized"
    return None


def _check_dense(k: str, t, source) -> None:
    kind = tensor_kind(t)
    if kind is None:
        return
    why = {"meta": "is on the meta device (it holds no values)", "nested": "is a nested tensor",
           "quantized": "is a quantized tensor"}.get(kind, f"is a sparse tensor ({kind})")
    raise CheckpointError(f"tensor {_key_text(k)!r} {why}; fadiag reads dense weights only (re-save it with "
                          "plain tensors, e.g. .to_dense() / .dequantize())", source=source)


def _mostly_tensors(d: dict) -> bool:
    import torch

    vals = list(d.values())
    return bool(vals) and sum(isinstance(v, torch.Tensor) for v in vals) >= max(1, len(vals) // 2 + 1) and all(
        isinstance(k, str) for k in d
    )
