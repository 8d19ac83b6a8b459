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
}


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
    return cls


def build_model(arch: str, args: dict, *, origin: str = "<spec>", base_dir: str | None = None):
    cls = resolve_arch(arch, origin=origin, base_dir=base_dir)
    try:
        return cls(**args)
    except TypeError as e:
        raise SpecError(f"model.args: {e}", source=origin) from None
    except (ValueError, RuntimeError) as e:
        raise SpecError(f"model.args: {e}", source=origin) from None
