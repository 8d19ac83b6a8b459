"""``fadiag inspect``: what a checkpoint holds, read safely, without building a model or running its code.

Report schema "fadiag.inspect/1": the tensors (key path, shape, dtype, element count, non-finite count),
parameter total, where the state dict sits, whether a spec is embedded, the non-tensor entries, and
whether the file needs arbitrary unpickling (then the offending globals, and nothing else is read).
Flags: (unsafe) needs arbitrary unpickling; (nonfinite) NaN/Inf in some tensor; (fp16) half-precision
weights (small-magnitude metrics are computed in float32/64 anyway; SCIENCE.md §2 pitfall 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import __version__
from .checkpoint import find_state_dict, read_checkpoint, sha256_file, sniff_format
from .errors import CheckpointError, UnsafeCheckpointError
from .report import clean

INSPECT_SCHEMA = "fadiag.inspect/1"
MAX_LISTED = 2000


def _count_nonfinite(t) -> int:
    import torch

    if not (t.is_floating_point() or t.is_complex()):
        return 0
    try:
        return int((~torch.isfinite(t)).sum())
    except (NotImplementedError, RuntimeError):  # float8 and other exotic dtypes: count in float32
        return int((~torch.isfinite(t.to(torch.float32))).sum())


def _walk(obj: Any, prefix: str, out_t: list, out_o: list, depth: int = 0) -> None:
    import torch

    if depth > 12:
        out_o.append({"key": prefix, "type": "(nested too deep)"})
        return
    if isinstance(obj, torch.Tensor):
        if len(out_t) < MAX_LISTED:
            nonfinite = _count_nonfinite(obj)
            out_t.append({"key": prefix, "shape": list(obj.shape), "dtype": str(obj.dtype).replace("torch.", ""),
                          "numel": int(obj.numel()), "nonfinite": nonfinite})
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _walk(v, f"{prefix}.{k}" if prefix else str(k), out_t, out_o, depth + 1)
        return
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in obj):
        for i, v in enumerate(obj):
            _walk(v, f"{prefix}[{i}]", out_t, out_o, depth + 1)
        return
    r = repr(obj)
    out_o.append({"key": prefix, "type": type(obj).__name__, "value": r if len(r) <= 80 else r[:77] + "..."})


def inspect_checkpoint(path: str, *, trust: bool = False) -> dict:
    from .report import Flag
    import dataclasses

    flags = []
    try:
        raw = read_checkpoint(path, trust=trust)
    except UnsafeCheckpointError as e:
        fmt = sniff_format(Path(path))
        flags.append(Flag("unsafe", "needs arbitrary unpickling", True, float(len(e.globals)), 0.0,
                          "globals: " + (", ".join(e.globals) or "unknown") + "; not loaded"))
        return clean({
            "schema": INSPECT_SCHEMA, "fadiag_version": __version__,
            "checkpoint": {"path": path, "sha256": sha256_file(path), "format": fmt, "trusted": False},
            "needs_unsafe_unpickling": True, "unsafe_globals": e.globals, "tensors": [], "other_entries": [],
            "n_tensors": 0, "n_elements": 0, "state_dict_key": None, "embedded_spec": False,
            "flags": [dataclasses.asdict(f) for f in flags], "verdict": "needs attention: needs arbitrary unpickling",
        })
    tensors, others = [], []
    _walk(raw.content, "", tensors, others)
    try:
        _, key = find_state_dict(raw.content, source=path)
    except CheckpointError:
        key = None
    nonfinite = sum(t["nonfinite"] for t in tensors)
    half = sorted({t["dtype"] for t in tensors if t["dtype"] in ("float16",)})
    flags.append(Flag("unsafe", "needs arbitrary unpickling", bool(raw.trusted), 0.0, 0.0,
                      "loaded with --trust-checkpoint" if raw.trusted else "read without unpickling code"))
    flags.append(Flag("nonfinite", "non-finite values in tensors", nonfinite > 0, float(nonfinite), 0.0,
                      f"{nonfinite} NaN/Inf value(s) in {sum(t['nonfinite'] > 0 for t in tensors)} tensor(s)"))
    flags.append(Flag("fp16", "half-precision weights", bool(half), float(len(half)), 0.0,
                      "fp16 tensors: metrics are computed in float32/64 anyway" if half else "no fp16 tensors"))
    names = [f.name for f in flags if f.flagged]
    return clean({
        "schema": INSPECT_SCHEMA, "fadiag_version": __version__, "checkpoint": raw.describe(),
        "needs_unsafe_unpickling": bool(raw.trusted), "unsafe_globals": [],
        "tensors": tensors, "other_entries": others, "n_tensors": len(tensors),
        "n_elements": sum(t["numel"] for t in tensors), "state_dict_key": key,
        "embedded_spec": isinstance(raw.content, dict) and isinstance(raw.content.get("fadiag_spec"), dict),
        "flags": [dataclasses.asdict(f) for f in flags],
        "verdict": "ok" if not names else "needs attention: " + "; ".join(names),
    })
