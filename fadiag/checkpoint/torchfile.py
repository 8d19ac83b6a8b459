"""torch files (.pt/.pth: zip, legacy pickle, TorchScript): the pickle torch will read is scanned first
(fadiag.checkpoint.pickles), refused when it names anything torch's weights-only loader does not allow
(unless ``trust``), then loaded with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import warnings
from pathlib import Path

from . import limits as _ck  # read at call time (callers may lower them)

from ..errors import CheckpointError, UnsafeCheckpointError
from .archive import ZipLayout, check_zip_bomb, read_member, zip_layout
from .pickles import _extra_safe_globals, _ScanBudget, classify_global, scan_pickles
from .raw import few as _few
from .raw import short as _short


def _pickle_to_scan(p: Path, fmt: str, lay: ZipLayout | None) -> tuple:
    """(bytes, max_pickles, more_follows, label): the pickle torch will read, bounded by MAX_PICKLE_BYTES."""
    limit = _ck.MAX_PICKLE_BYTES
    if lay is not None:
        info = lay.data_pkl
        if info.file_size > limit:
            raise CheckpointError(f"{info.filename} is {info.file_size:,} bytes, over the {limit:,}-byte "
                                  "pickle limit", source=str(p))
        data = read_member(p, info)
        return data, 1, False, info.filename
    with open(p, "rb") as f:
        data = f.read(limit + 1)
    more = len(data) > limit
    return data[:limit], _ck.LEGACY_PICKLES, more, "the legacy pickle stream"


def _scan_extras(p: Path, lay: ZipLayout) -> tuple:
    """Anomalies of a torch zip, as sentences, and the globals its unread pickle members name (bounded)."""
    anomalies, found = [], []
    budget = _ck.MAX_PICKLE_OPS
    for n in lay.duplicates:
        anomalies.append(f"{n} appears more than once" + (" (torch reads the last copy)"
                                                           if lay.data_pkl is not None and n == lay.data_pkl.filename
                                                           else ""))
    for info in lay.extra_pickles:
        if info is not lay.data_pkl and info.filename == lay.data_pkl.filename:
            what = f"an earlier copy of {info.filename}"
        else:
            what = f"an extra pickle member {info.filename}"
        names = []
        if info.file_size <= _ck.MAX_PICKLE_BYTES and budget > 0:
            try:
                sc = scan_pickles(read_member(p, info), max_pickles=1, max_ops=budget)
                budget -= sc.ops
                names = sc.globals
            except (CheckpointError, _ScanBudget):
                budget = 0
        bad = [n for n in names if classify_global(n) == "dangerous"]
        anomalies.append(f"{what} that torch does not read" + (f" (naming {_few(bad)}, which can run code)" if bad
                                                                 else ""))
        found += names
    return anomalies, found


def _read_torch(p: Path, fmt: str, *, trust: bool, strict: bool = True) -> tuple:
    """(content, RawCheckpoint extras: anomalies, globals, notes) of a torch file; refuses what is unsafe."""
    lay = zip_layout(p) if fmt in ("torch", "torchscript") else None
    if lay is not None:
        check_zip_bomb(p)
    data, n_pickles, more, label = _pickle_to_scan(p, fmt, lay)
    try:
        scan = scan_pickles(data, max_pickles=n_pickles, max_ops=_ck.MAX_PICKLE_OPS, more_follows=more)
    except _ScanBudget as e:
        raise CheckpointError(f"{label} {e}", source=str(p)) from None
    classes = {n: classify_global(n) for n in scan.globals}
    anomalies, extra_globals = _scan_extras(p, lay) if lay is not None else ([], [])
    for n in extra_globals:
        classes.setdefault(n, classify_global(n))
    info = {"anomalies": tuple(anomalies), "globals": tuple(classes.items())}
    if not trust:
        _refuse_unsafe(p, fmt, scan.globals, classes, anomalies, strict)
    elif anomalies:
        info["notes"] = tuple(anomalies)
    risky = fmt == "torchscript" or any(classes[n] != "allowed" for n in scan.globals)
    return _load(p, fmt, trust=trust, first_trusted=trust and risky, scan_error=scan.error, classes=classes), info


def _refuse_unsafe(p: Path, fmt: str, names: list, classes: dict, anomalies: list, strict: bool) -> None:
    """Without --trust-checkpoint: refuse TorchScript, dangerous globals, a tampered archive (``strict``) and
    globals torch does not allow, in that order, each with the names it found and what to do instead."""
    dangerous = [n for n in names if classes[n] == "dangerous"]
    unknown = [n for n in names if classes[n] == "unknown"]
    advice = "Re-save it as a plain state dict, or pass --trust-checkpoint if you trust its origin"
    if fmt == "torchscript":
        raise UnsafeCheckpointError(
            "is a TorchScript archive (torch.jit.save): loading it compiles and runs the code inside. Re-save its "
            "weights (torch.save(torch.jit.load(f).state_dict(), 'weights.pt')), or pass --trust-checkpoint "
            "to have fadiag take torch.jit.load(f).state_dict()", source=str(p), globals_=names,
            reason="TorchScript archive (code inside)", classes=classes)
    if dangerous:
        others = unknown[:3]
        raise UnsafeCheckpointError(
            f"refusing to unpickle {_few(dangerous, 6)} (can run code"
            + (f"; also not allowed by torch: {_few(others)}" if others else "") + "); this file can run code "
            f"when loaded. {advice}", source=str(p), globals_=dangerous + unknown, classes=classes,
            reason="dangerous globals")
    if anomalies and strict:
        raise CheckpointError(f"refusing a tampered archive: {'; '.join(anomalies)}. Re-save it with torch.save, "
                              "or pass --trust-checkpoint if you trust its origin", source=str(p))
    if unknown:
        if any(n.startswith("torch.nn.modules.") for n in unknown):
            advice = ("It is a whole pickled nn.Module (torch.save(model)): save model.state_dict() instead, or pass "
                      "--trust-checkpoint (if you trust its origin) to have fadiag take its state_dict()")
        raise UnsafeCheckpointError(
            f"refusing to unpickle {_few(unknown, 6)}: not on torch's weights-only allow-list, so loading it would "
            f"import and run code from that module. {advice}", source=str(p), globals_=unknown,
            classes=classes, reason="globals not allowed by torch")


def _torch_load(p: Path, fmt: str, trusted: bool):
    """torch.load from a file object, not the path: torch.load dispatches on a ".safetensors" suffix by name,
    and we decided the format from the bytes. Warnings (e.g. "Detected pickle protocol 4") would break the
    one-line stderr contract; the outcome is reported by us instead."""
    import torch

    with open(p, "rb") as f, warnings.catch_warnings(), torch.sparse.check_sparse_tensor_invariants(True):
        warnings.simplefilter("ignore")
        if fmt == "torchscript":  # only with --trust-checkpoint
            return dict(torch.jit.load(f, map_location="cpu").state_dict())
        if not trusted:
            with torch.serialization.safe_globals(_extra_safe_globals()):
                return torch.load(f, map_location="cpu", weights_only=True)
        return torch.load(f, map_location="cpu", weights_only=False)  # only with --trust-checkpoint


def _load(p: Path, fmt: str, *, trust: bool, first_trusted: bool, scan_error: str | None, classes: dict):
    """Load, and say in one line why it failed: broken, unsupported by the weights-only loader, or no memory."""
    import pickle

    try:
        return _torch_load(p, fmt, trusted=first_trusted)
    except pickle.UnpicklingError as e:
        if trust:
            try:
                return _torch_load(p, fmt, trusted=True)
            except Exception as e2:
                raise CheckpointError(f"cannot load even with --trust-checkpoint ({_short(e2)})", source=str(p)) from None
        if scan_error:  # the stream does not parse: broken, not hostile
            raise CheckpointError(f"corrupt torch checkpoint ({scan_error})", source=str(p)) from None
        said = _torch_said(e)
        raise UnsafeCheckpointError(
            f"torch's weights-only loader cannot read it: {said}. Every global it names is allowed by torch, so "
            "this is not a sign of a hostile file. Re-save it with torch.save's default pickle protocol (2), or "
            "pass --trust-checkpoint if you trust its origin", source=str(p), globals_=[], classes=classes,
            reason=said) from None
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError("out of memory while loading (the file asks for more than this machine has)",
                              source=str(p)) from None
    except Exception as e:
        if trust:
            raise CheckpointError(f"cannot load even with --trust-checkpoint ({_short(e)})", source=str(p)) from None
        raise CheckpointError(f"corrupt or unreadable torch checkpoint ({_short(e)})", source=str(p)) from None


def _torch_said(e: Exception) -> str:
    """torch's own reason, in words: "Unsupported operand 149" -> the pickle opcode and its protocol."""
    import pickletools
    import re

    text = str(e)
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|\Z)", text, re.S)
    said = " ".join((m.group(1) if m else text.splitlines()[0] if text else type(e).__name__).split())
    op = re.search(r"Unsupported operand (\d+)", said)
    if op:
        code = int(op.group(1))
        desc = next((o for o in pickletools.opcodes if ord(o.code) == code), None) if code < 256 else None
        if desc is not None:
            return (f"it uses pickle opcode {desc.name} (pickle protocol {desc.proto}), which that loader does not "
                    f"support (torch said: {said})")
    return f"torch said: {said[:200]}"

