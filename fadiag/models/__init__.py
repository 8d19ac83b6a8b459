"""Built-in architectures and the registry that builds a model from a spec.

Built-in names map to "module:Class" inside this package. Any other "package.module:Class" imports user
code; that only happens because the user wrote it in the spec (DESIGN.md, Safety).
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


def is_builtin_arch(arch: str) -> bool:
    """True when naming ``arch`` imports only fadiag's own code."""
    return arch in BUILTIN or arch in SAFE_TARGETS


def require_trusted_code(arch: str, *, key: str, origin: str, trusted: bool) -> None:
    """The trust gate for a spec fadiag FOUND (a sidecar beside the checkpoint), not one the user passed:
    naming user code there imports it only with --trust-code (like ``trust_remote_code``). Exit 2 otherwise."""
    if trusted or is_builtin_arch(arch):
        return
    mod = arch.partition(":")[0] if ":" in arch else arch
    raise SpecError(f"{key}: {arch!r} would import and run module {mod!r}, named by a spec found beside the "
                    "checkpoint (not given with --spec); pass --trust-code if you trust that folder, "
                    "or --spec to name the spec yourself", source=origin)


def resolve_arch(arch: str, *, origin: str = "<spec>", base_dir: str | None = None):
    target = BUILTIN.get(arch, arch)
    if ":" not in target:
        raise SpecError(
            f"model.arch: unknown architecture {arch!r} (built-in: {', '.join(BUILTIN)}; "
            "or 'package.module:Class')", source=origin)
    mod_name, _, cls_name = target.partition(":")
    import sys

    added = False
    if arch not in BUILTIN and base_dir:
        # A user module beside the spec file is importable without installing it (the user named it).
        sys.path.insert(0, base_dir)
        added = True
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:
        raise SpecError(f"model.arch: cannot import {mod_name!r} ({type(e).__name__}: {e})", source=origin) from None
    finally:
        if added:
            sys.path.remove(base_dir)
    cls = getattr(mod, cls_name, None)
    if cls is None:
        raise SpecError(f"model.arch: {mod_name!r} has no attribute {cls_name!r}", source=origin)
    import torch

    # Only a Module class is ever called: "os:system" or "builtins:eval" in a spec is refused, not run.
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise SpecError(f"model.arch: {target!r} is not a torch.nn.Module class", source=origin)
    return cls


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
    if arch not in BUILTIN:
        return
    try:
        with torch.device("meta"):
            m = cls(**args)
    except Exception:
        return  # the real build reports bad arguments with its own message
    n = sum(p.numel() for p in m.parameters())
    if n > MAX_PARAMS:
        raise SpecError(f"model.args describe {n:,} parameters, over the limit of {MAX_PARAMS:,}", source=origin)


def build_model(arch: str, args: dict, *, origin: str = "<spec>", base_dir: str | None = None):
    cls = resolve_arch(arch, origin=origin, base_dir=base_dir)
    check_size(arch, cls, args, origin=origin)
    try:
        return cls(**args)
    except TypeError as e:
        raise SpecError(f"model.args: {e}", source=origin) from None
    except (ValueError, RuntimeError) as e:
        raise SpecError(f"model.args: {e}", source=origin) from None
