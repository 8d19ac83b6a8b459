"""Safe reading of checkpoints: .pt/.pth (torch zip or legacy pickle), .safetensors, .npz, and Hugging Face
model folders (config.json + model.safetensors).

Checkpoints are untrusted data (DESIGN.md, Safety; docs/safety.md): torch files are read with
``torch.load(weights_only=True)``; safetensors and npz (``allow_pickle=False``) never unpickle. Before
torch sees a pickle, fadiag walks its opcodes itself (nothing is executed), under a byte and opcode budget,
and reads only the pickle torch will read (``<archive>/data.pkl``, or the leading pickles of a legacy
file). Each global it names is classed as dangerous (can run code), allowed by torch's weights-only
loader, or unknown; a file needing anything but the allowed ones is refused with those globals named,
unless the caller passes ``trust=True`` (the CLI's ``--trust-checkpoint``), which the report then records.
Every zip (npz and torch) is held to a decompressed-byte budget read from its directory, and a torch zip
with a duplicate member or an extra pickle member (which torch would not read, but which hides content)
is refused, or listed by ``fadiag inspect``.

The modules: ``archive`` (zip layout, format sniffing, zip-bomb budget), ``pickles`` (opcode scan and the
classes of globals), ``readers`` (npz, safetensors), ``torchfile`` (torch files), ``state`` (finding the
state dict), ``hf`` (Hugging Face model folders). The limits live in ``limits`` (read and set through the package too), and every
reader reads them at call time: lowering ``fadiag.checkpoint.MAX_PICKLE_OPS`` lowers it everywhere.
"""

from __future__ import annotations

import os
import sys as _sys
import types as _types
from pathlib import Path

from . import limits
from ..errors import CheckpointError
from .archive import ZipLayout, check_zip_bomb, sniff_format, zip_layout
from .pickles import (
    DANGEROUS_BUILTINS,
    DANGEROUS_MODULES,
    DANGEROUS_NAMES,
    PickleScan,
    _ScanBudget,
    classify_global,
    pickle_globals,
    scan_pickles,
)
from .raw import RawCheckpoint, sha256_file
from .readers import _npz_pickle_globals, _read_npz, _read_safetensors
from .state import AUTO_PREFIXES, STATE_DICT_KEYS, find_state_dict, tensor_kind
from .torchfile import _read_torch, _scan_extras

__all__ = [
    "AUTO_PREFIXES", "DANGEROUS_BUILTINS", "DANGEROUS_MODULES", "DANGEROUS_NAMES", "LEGACY_PICKLES",
    "MAX_CHECKPOINT_BYTES", "MAX_PICKLE_BYTES", "MAX_PICKLE_OPS", "MAX_ZIP_EXPANDED", "MAX_ZIP_RATIO",
    "PickleScan", "RawCheckpoint", "STATE_DICT_KEYS", "ZipLayout", "check_zip_bomb", "classify_global",
    "find_state_dict", "pickle_globals", "read_checkpoint", "scan_pickles", "sha256_file", "sniff_format",
    "tensor_kind", "zip_layout", "_ScanBudget", "_npz_pickle_globals", "_scan_extras",
]


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False, strict: bool = True) -> RawCheckpoint:
    """Read ``path`` safely and return its content. Raises CheckpointError (exit code 2) on any problem.

    strict=False (``fadiag inspect``): a torch zip with duplicate or extra pickle members is read anyway
    (torch reads only its data.pkl) and the anomalies are returned for the caller to flag."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError("no such file", source=str(path))
    if not p.is_file():
        raise CheckpointError("not a regular file", source=str(path))
    size = p.stat().st_size
    if size > limits.MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"file is {size:,} bytes, over the {limits.MAX_CHECKPOINT_BYTES:,}-byte limit", source=str(path))
    fmt = sniff_format(p)
    digest = sha256_file(p)
    extra: dict = {}
    if fmt == "npz":
        content, notes = _read_npz(p)
        extra["notes"] = tuple(notes)
    elif fmt == "safetensors":
        content = _read_safetensors(p)
    else:
        content, extra = _read_torch(p, fmt, trust=trust, strict=strict)
    return RawCheckpoint(path=str(path), format=fmt, sha256=digest, trusted=bool(trust), content=content, **extra)


class _Package(_types.ModuleType):
    """The limits (fadiag.checkpoint.limits) read and set through the package, as they always were."""

    def __getattr__(self, name):
        if name in limits.NAMES:
            return getattr(limits, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in limits.NAMES:
            setattr(limits, name, value)
        else:
            super().__setattr__(name, value)

    def __delattr__(self, name):
        if name not in limits.NAMES:
            super().__delattr__(name)


_sys.modules[__name__].__class__ = _Package
