"""Built-in architectures and the registry that builds a model from a spec.

Built-in names map to "module:Class" inside this package. Any other "package.module:Class" imports user
code; that only happens because the user wrote it in the spec (DESIGN.md, Safety). Also (docs/models.md):

- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, **args)`` (the ``timm`` extra; nothing downloaded);
- ``transformers:Class``: a Hugging Face class built from a config whose fields are ``args``
  (``Class.config_class.from_dict(args)``, nothing downloaded, never ``trust_remote_code``; the ``hf`` extra);
  a "package.module:Class" that is a Hugging Face class is built the same way. fadiag.subject loads its
  weights through transformers' own ``from_pretrained`` (fadiag.checkpoint.hf.load_transformers);
- ``package.module:factory``: a function annotated to return an ``nn.Module`` subclass (torchvision's
  ``resnet18``), called with ``args``; its result must be an ``nn.Module``.

While a user model is built, its prints go to stderr (stdout carries the JSON report), and any exception
it raises is bad input (exit 2).
"""

from __future__ import annotations

import importlib

from ..errors import SpecError

BUILTIN = {
    "resmlp": "fadiag.models.resmlp:ResMLP",
    "vit_mini": "fadiag.models.vit_mini:ViTMini",
    "gsnn": "fadiag.models.gsnn:GSNN",
    "multihead": "fadiag.models.multihead:MultiHeadLearner",
    "gsnn-upstream": "fadiag.models.gsnn_upstream:UpstreamGSNN",
}


#: Classes inside fadiag that a spec may name without --trust-code (the value net's default among them).
SAFE_TARGETS = frozenset(BUILTIN.values()) | {"fadiag.models.value:ValueMLP"}


#: Prefixes that import an installed library's own model classes, never a module from beside a checkpoint
#: (no sys.path change; Hugging Face classes are built from a config with trust_remote_code never passed).
LIBRARY_PREFIXES = ("timm:", "transformers:")


def is_builtin_arch(arch: str) -> bool:
    """True when naming ``arch`` imports only fadiag's own code or an installed model library (timm,
    transformers), never user code."""
    return arch in BUILTIN or arch in SAFE_TARGETS or arch.startswith(LIBRARY_PREFIXES)


def require_trusted_code(arch: str, *, key: str, origin: str, trusted: bool, found: str | None = None) -> None:
    """The trust gate for a spec fadiag FOUND (a sidecar beside the checkpoint), not one the user passed:
    naming user code there imports it only with --trust-code (like ``trust_remote_code``). Exit 2 otherwise."""
    if trusted or is_builtin_arch(arch):
        return
    mod = arch.partition(":")[0] if ":" in arch else arch
    found = found or "found beside the checkpoint"
    raise SpecError(f"{key}: {arch!r} would import and run module {mod!r}, named by a spec {found} (not given "
                    "with --spec on the command line); pass --trust-code if you trust that folder, "
                    "or --spec to name the spec yourself", source=origin)


def _import(mod_name: str, origin: str, base_dir: str | None = None, extra: str | None = None):
    import sys

    added = bool(base_dir)
    if added:
        # A user module beside the spec file is importable without installing it (the user named it).
        sys.path.insert(0, base_dir)
    try:
        return importlib.import_module(mod_name)
    except ImportError as e:
        hint = f"; pip install 'fadiag[{extra}]'" if extra else ""
        raise SpecError(f"model.arch: cannot import {mod_name!r} ({type(e).__name__}: {e}{hint})",
                        source=origin) from None
    except Exception as e:
        raise SpecError(f"model.arch: cannot import {mod_name!r} ({type(e).__name__}: {e})", source=origin) from None
    finally:
        if added:
            sys.path.remove(base_dir)


def _is_factory(obj) -> bool:
    """A Python function annotated to return an nn.Module subclass (never a builtin such as os.system)."""
    import inspect
    import typing

    import torch

    if not inspect.isfunction(obj):
        return False
    try:
        ret = typing.get_type_hints(obj).get("return")
    except Exception:
        ret = inspect.signature(obj).return_annotation
    return isinstance(ret, type) and issubclass(ret, torch.nn.Module)


def resolve_arch(arch: str, *, origin: str = "<spec>", base_dir: str | None = None):
    """The class or factory that ``arch`` names (see the module docstring)."""
    if arch.startswith("timm:"):
        timm = _import("timm", origin, extra="timm")
        name = arch[5:]
        return lambda **args: timm.create_model(name, pretrained=False, **args)
    target = BUILTIN.get(arch, arch)
    if ":" not in target:
        raise SpecError(
            f"model.arch: unknown architecture {arch!r} (built-in: {', '.join(BUILTIN)}; "
            "'package.module:Class', 'timm:NAME' or 'transformers:Class')", source=origin)
    mod_name, _, cls_name = target.partition(":")
    hf = mod_name == "transformers"
    mod = _import(mod_name, origin, None if arch in BUILTIN or hf else base_dir, "hf" if hf else None)
    try:
        cls = getattr(mod, cls_name, None)
    except Exception as e:  # transformers resolves its classes lazily: a missing backend raises here
        raise SpecError(f"model.arch: cannot load {target!r} ({type(e).__name__}: {e})", source=origin) from None
    if cls is None:
        raise SpecError(f"model.arch: {mod_name!r} has no attribute {cls_name!r}", source=origin)
    import torch

    # Only a Module class (or a factory annotated to return one) is ever called: "os:system" or
    # "builtins:eval" in a spec is refused, not run.
    if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
        if isinstance(getattr(cls, "config_class", None), type):  # Hugging Face: a config from the args
            return _hf_builder(cls)
        return cls
    if _is_factory(cls):
        return cls
    raise SpecError(f"model.arch: {target!r} is not a torch.nn.Module class nor a factory annotated to return one",
                    source=origin)


def _hf_builder(cls):
    from ..checkpoint.hf import make_config

    def build(**args):
        return cls(make_config(cls, args))  # never trust_remote_code (make_config drops it)

    build.hf_class = cls  # fadiag.subject loads it through transformers' own from_pretrained
    return build


#: Up-front limits on built-in model sizes, so an absurd spec is refused instead of exhausting memory.
MAX_ARG = 10_000_000
MAX_DEPTH = 10_000
MAX_PARAMS = 2**31  # 8 GiB of float32 weights


def check_size(arch: str, cls, args: dict, *, origin: str) -> None:
    """Refuse absurd sizes before allocating: integer args, depth, then the parameter count (meta device)."""
    import torch

    for k, v in args.items():
        vals = v if isinstance(v, (list, tuple)) else [v]
        for x in vals:
            if isinstance(x, int) and not isinstance(x, bool):
                lim = MAX_DEPTH if k in ("depth", "n_layers") else MAX_ARG
                if x > lim:
                    raise SpecError(f"model.args.{k} = {x} is over the limit of {lim:,}", source=origin)
    if arch not in BUILTIN and not arch.startswith("transformers:"):  # HF: a folder's config.json is data
        return
    try:
        with torch.device("meta"):
            m = cls(**args)
    except Exception:
        return  # the real build reports bad arguments with its own message
    n = sum(p.numel() for p in m.parameters())
    if n > MAX_PARAMS:
        raise SpecError(f"model.args describe {n:,} parameters, over the limit of {MAX_PARAMS:,}", source=origin)


def build_model(arch: str, args: dict, *, origin: str = "<spec>", base_dir: str | None = None, config=None):
    """The model ``arch`` names, called with ``args`` (or with the one ``config`` object: model.config_class)."""
    import contextlib
    import sys

    import torch

    cls = resolve_arch(arch, origin=origin, base_dir=base_dir)
    check_size(arch, cls, args, origin=origin)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # a constructor's print() must not corrupt JSON on stdout
            m = cls(config) if config is not None else cls(**args)
    except SpecError:
        raise
    except Exception as e:  # any exception from a user constructor is bad input (exit 2)
        raise SpecError(f"model.args: {type(e).__name__}: {' '.join(str(e).split())[:200]}", source=origin) from None
    if not isinstance(m, torch.nn.Module):
        raise SpecError(f"model.arch: {arch!r} returned {type(m).__name__}, not an nn.Module", source=origin)
    return m
