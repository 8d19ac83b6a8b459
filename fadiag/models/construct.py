"""Building a model from what its checkpoint carries (docs/models.md, "Constructor arguments from the checkpoint").

- ``model.args_from: KEY``: the constructor's keyword arguments are the dict stored in the checkpoint under
  KEY (dotted for nesting): nanoGPT's ``model_args``, Lightning's ``hyper_parameters``. ``model.args`` in
  the spec win over it. Only plain values are taken (numbers, strings, booleans, None, and lists or dicts of
  them; the checkpoint was read without unpickling objects). Keys the constructor (or the config class) does
  not take are left out when it has no ``**kwargs``, and the report says which.
- ``model.config_class: "module:Class"``: the constructor takes one config object (nanoGPT's
  ``GPT(GPTConfig(...))``): the class is built from the arguments and passed as the only argument. It must be
  a dataclass or a Hugging Face ``PretrainedConfig``: nothing else named in a spec is ever called with data
  from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import inspect

from ..errors import SpecError

_PLAIN = (int, float, str, bool, type(None))


def _plain(v, depth: int = 0) -> bool:
    if isinstance(v, _PLAIN):
        return True
    if depth > 4:
        return False
    if isinstance(v, (list, tuple)):
        return all(_plain(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x, depth + 1) for k, x in v.items())
    return False


def args_from_checkpoint(content, key: str, *, origin: str) -> dict:
    """The dict under ``key`` (dotted) in the checkpoint's content, checked to hold plain values only."""
    obj = content
    for part in key.split("."):
        if not isinstance(obj, dict) or part not in obj:
            have = ", ".join(str(k) for k in list(obj)[:8]) if isinstance(obj, dict) else type(obj).__name__
            raise SpecError(f"model.args_from: the checkpoint has no {key!r} (top-level keys: {have})", source=origin)
        obj = obj[part]
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise SpecError(f"model.args_from: {key!r} holds a {type(obj).__name__}, not a dict of arguments",
                        source=origin)
    bad = [k for k, v in obj.items() if not _plain(v)]
    if bad:
        raise SpecError(f"model.args_from: {key!r}.{bad[0]} is a {type(obj[bad[0]]).__name__}, not a plain value "
                        "(number, string, boolean, list): set it in model.args", source=origin)
    return dict(obj)


def _accepted(target) -> set | None:
    """The keyword names ``target`` takes, or None when it takes **kwargs (or cannot be inspected)."""
    if dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target) if f.init}
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def resolve_config_class(name: str, *, origin: str, base_dir: str | None):
    """The config class a spec names: a dataclass or a PretrainedConfig subclass, else exit 2."""
    from . import _import

    if ":" not in name:
        raise SpecError(f"model.config_class: expected 'module:Class', got {name!r}", source=origin)
    mod_name, _, cls_name = name.partition(":")
    mod = _import(mod_name, origin, None if mod_name == "transformers" else base_dir)
    cls = getattr(mod, cls_name, None)
    if cls is None:
        raise SpecError(f"model.config_class: {mod_name!r} has no attribute {cls_name!r}", source=origin)
    ok = isinstance(cls, type) and (dataclasses.is_dataclass(cls)
                                    or any(c.__name__ == "PretrainedConfig" for c in cls.__mro__))
    if not ok:
        raise SpecError(f"model.config_class: {name!r} is neither a dataclass nor a PretrainedConfig: only a config "
                        "class is built from the checkpoint's arguments", source=origin)
    return cls


def build_for_spec(sp, content=None) -> tuple:
    """(model, note): the spec's model built with args (model.args over model.args_from) and, with
    model.config_class, one config object. ``note`` says where the arguments came from (None: the spec's)."""
    from . import build_model, resolve_arch

    m = sp.model
    args, dropped, note = dict(m.args), [], None
    if m.args_from:
        found = args_from_checkpoint(content, m.args_from, origin=sp.origin)
        args = {**found, **m.args}
        target = (resolve_config_class(m.config_class, origin=sp.origin, base_dir=sp.base_dir) if m.config_class
                  else resolve_arch(m.arch, origin=sp.origin, base_dir=sp.base_dir))
        keep = _accepted(target)
        if keep is not None:
            dropped = sorted(k for k in args if k not in keep)
            args = {k: v for k, v in args.items() if k in keep}
        note = (f"constructor arguments from the checkpoint's {m.args_from!r} ({len(found)} key(s))"
                + (f", model.args over them ({', '.join(sorted(m.args))})" if m.args else "")
                + (f"; not taken by the constructor: {', '.join(dropped)}" if dropped else ""))
    if not m.config_class:
        return build_model(m.arch, args, origin=sp.origin, base_dir=sp.base_dir), note
    cfg_cls = resolve_config_class(m.config_class, origin=sp.origin, base_dir=sp.base_dir)
    try:
        cfg = cfg_cls(**args)
    except Exception as e:  # a config class that rejects the arguments is bad input
        raise SpecError(f"model.config_class: {type(e).__name__}: {' '.join(str(e).split())[:200]}",
                        source=sp.origin) from None
    note = (note + "; " if note else "") + f"passed as one {cfg_cls.__name__} (model.config_class)"
    return build_model(m.arch, {}, origin=sp.origin, base_dir=sp.base_dir, config=cfg), note
