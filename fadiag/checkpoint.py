"""Safe reading of checkpoints: .pt/.pth (torch zip or legacy pickle), .safetensors, .npz.

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
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError, UnsafeCheckpointError

#: Keys under which training scripts commonly store the model's state dict, in order of preference.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "model_state", "net", "module", "weights")
#: Prefixes wrappers add to every parameter name (Lightning, DataParallel, torch.compile).
AUTO_PREFIXES = ("model.", "module.", "_orig_mod.", "net.")
#: Refuse files larger than this unless the caller raises it: a guard against absurd inputs.
MAX_CHECKPOINT_BYTES = 8 * 1024**3
#: A pickle stream (torch's data.pkl, or a legacy file's leading pickles) over this many bytes is refused.
MAX_PICKLE_BYTES = 64 * 1024**2
#: ... and over this many opcodes (an honest state dict needs ~20 per tensor).
MAX_PICKLE_OPS = 4_000_000
#: A legacy torch file holds five pickles before its raw storages: magic, protocol, sys info, object, keys.
LEGACY_PICKLES = 5

FORMATS = ("torch", "torch-legacy", "torchscript", "safetensors", "npz")


@dataclass(frozen=True)
class RawCheckpoint:
    """What a checkpoint file holds, read safely.

    Attributes:
        path: the file, as given.
        format: one of FORMATS.
        sha256: hex digest of the file's bytes.
        trusted: True only when arbitrary unpickling was allowed (``--trust-checkpoint``).
        content: the top-level object: a dict of tensors for safetensors/npz, anything
            ``weights_only`` admits for torch files (dicts, lists, tensors, numbers, strings).
        trusted_code: True when the spec found beside the checkpoint was allowed to import code (``--trust-code``).
        notes: what was left out or is odd (skipped non-numeric npz arrays, archive anomalies under trust).
        anomalies: duplicate or extra pickle members of a torch zip (refused unless read with strict=False).
        globals: every global the scanned pickle(s) name, as (name, class) pairs; class is one of
            "dangerous", "allowed", "unknown" (see classify_global).
    """

    path: str
    format: str
    sha256: str
    trusted: bool
    content: Any = field(repr=False)
    trusted_code: bool = False
    notes: tuple = ()
    anomalies: tuple = ()
    globals: tuple = ()

    def describe(self) -> dict:
        d = {"path": self.path, "sha256": self.sha256, "format": self.format, "trusted": self.trusted}
        if self.trusted_code:
            d["trusted_code"] = True
        if self.notes:
            d["notes"] = list(self.notes)
        return d


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- zip layout

@dataclass
class ZipLayout:
    """A zip's directory, as torch's reader sees it (nothing decompressed)."""

    prefix: str | None
    """The archive folder: the first member's top folder (torch refuses a first member without one)."""
    data_pkl: Any = None
    """The ZipInfo of ``<prefix>/data.pkl`` that torch reads (the last of duplicates, as torch does)."""
    torchscript: bool = False
    duplicates: list = field(default_factory=list)
    """Member names present more than once."""
    extra_pickles: list = field(default_factory=list)
    """ZipInfos of ``.pkl`` members torch does not read (and earlier copies of a duplicated data.pkl)."""
    all_npy: bool = False
    expanded: int = 0


def zip_layout(p: Path) -> ZipLayout:
    try:
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"corrupt zip container ({_short(e)})", source=str(p)) from None
    names = [i.filename for i in infos]
    first = names[0] if names else ""
    prefix = first.split("/", 1)[0] if "/" in first else None
    lay = ZipLayout(prefix=prefix, all_npy=bool(names) and all(n.endswith(".npy") for n in names),
                    expanded=sum(i.file_size for i in infos))
    seen: dict = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    lay.duplicates = sorted(n for n, c in seen.items() if c > 1)
    if prefix is not None:
        pkl = f"{prefix}/data.pkl"
        copies = [i for i in infos if i.filename == pkl]
        if copies:
            lay.data_pkl = copies[-1]
            lay.torchscript = f"{prefix}/constants.pkl" in seen and any(n.startswith(f"{prefix}/code/") for n in seen)
            ts_pickles = {f"{prefix}/constants.pkl"} if lay.torchscript else set()
            lay.extra_pickles = copies[:-1] + [i for i in infos if i.filename.endswith(".pkl")
                                               and i.filename != pkl and i.filename not in ts_pickles]
    return lay


def sniff_format(path: Path) -> str:
    """Decide the format from the file's first bytes (the suffix can lie), as torch.load would."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) == 0:
        raise CheckpointError("file is empty", source=str(path))
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        lay = zip_layout(path)
        if lay.torchscript:
            return "torchscript"
        if lay.data_pkl is not None:
            return "torch"
        if lay.all_npy:
            return "npz"
        raise CheckpointError("zip file is neither a torch checkpoint nor an .npz archive", source=str(path))
    # safetensors first: its 8-byte little-endian header length can start with 0x80 like a pickle.
    if len(head) >= 9 and head[8:9] == b"{":
        fits = int.from_bytes(head[:8], "little") <= path.stat().st_size - 8
        if fits or head[:1] != b"\x80":
            return "safetensors"  # a header length past the end is reported by the safetensors reader
    if head[:1] == b"\x80":
        return "torch-legacy"  # torch.load, too, reads a file that does not start with a zip header as legacy
    raise CheckpointError(
        "unrecognised file format (expected a torch .pt/.pth, .safetensors or .npz file)", source=str(path)
    )


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
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"file is {size:,} bytes, over the {MAX_CHECKPOINT_BYTES:,}-byte limit", source=str(path))
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


#: An archive expanding past this many bytes, at over MAX_ZIP_RATIO times its size, is refused as a bomb.
MAX_ZIP_EXPANDED = 256 * 1024**2
MAX_ZIP_RATIO = 200


def check_zip_bomb(p: Path, err_cls=CheckpointError) -> None:
    """Refuse a zip (npz or torch) whose members expand absurdly: read the sizes from the directory, not the
    data. The readers (numpy's, torch's, ours) never inflate a member past its declared size."""
    try:
        with zipfile.ZipFile(p) as zf:
            expanded = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # the reader reports the broken archive
    size = max(p.stat().st_size, 1)
    if expanded > MAX_ZIP_EXPANDED and expanded > MAX_ZIP_RATIO * size:
        raise err_cls(f"archive expands to {expanded:,} bytes from {size:,} (over {MAX_ZIP_RATIO}x past "
                      f"{MAX_ZIP_EXPANDED:,} bytes): refusing a likely zip bomb", source=str(p))
    if expanded > MAX_CHECKPOINT_BYTES:
        raise err_cls(f"archive expands to {expanded:,} bytes, over the {MAX_CHECKPOINT_BYTES:,}-byte limit",
                      source=str(p))


#: numpy dtype kinds that are not numbers: such arrays in an .npz are skipped (with a note), never loaded.
_NON_NUMERIC_KINDS = "USVMm"


def _read_npz(p: Path) -> tuple:
    import numpy as np
    import torch

    check_zip_bomb(p)
    skipped: list = []
    try:
        with np.load(p, allow_pickle=False) as z:
            out = {}
            for k in z.files:
                arr = z[k]
                if arr.dtype.kind in _NON_NUMERIC_KINDS:
                    skipped.append(f"{k} ({arr.dtype})")
                    continue
                if arr.dtype.kind not in "biuf":
                    raise CheckpointError(f"array {k!r} has unsupported dtype {arr.dtype}", source=str(p))
                # ascontiguousarray makes a 0-d array 1-d: keep the shape as saved
                out[k] = torch.from_numpy(np.ascontiguousarray(arr).reshape(arr.shape))
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            names = _npz_pickle_globals(p)
            bad = [n for n in names if classify_global(n) != "allowed"]
            what = (f"a pickled object array naming {', '.join(bad)}" if bad else
                    "a pickled object array (an .npz of weights holds plain numbers)")
            raise UnsafeCheckpointError(f"npz holds {what}; refusing to unpickle", source=str(p), globals_=names,
                                        classes={n: classify_global(n) for n in names},
                                        reason="pickled object array") from None
        raise CheckpointError(f"corrupt .npz ({_short(e)})", source=str(p)) from None
    except Exception as e:  # zipfile/zlib/OSError/EOF: all mean a broken file
        raise CheckpointError(f"corrupt .npz ({_short(e)})", source=str(p)) from None
    if skipped and not out:
        raise CheckpointError(f"npz holds no numeric arrays (skipped non-numeric dtype: {_few(skipped)})",
                              source=str(p))
    notes = [f"skipped {len(skipped)} non-numeric array(s): {_few(skipped)}"] if skipped else []
    return out, notes


def _read_safetensors(p: Path) -> dict:
    import json
    import struct

    # Validate the header ourselves first so a hostile length cannot make anything allocate gigabytes.
    size = p.stat().st_size
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > min(size - 8, 100 * 1024**2):
            raise CheckpointError(f"safetensors header length {n} exceeds the file", source=str(p))
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise CheckpointError("safetensors header is not valid JSON", source=str(p)) from None
    if not isinstance(header, dict):
        raise CheckpointError("safetensors header is not a JSON object", source=str(p))
    data_len = size - 8 - n
    for k, v in header.items():
        if k == "__metadata__":
            continue
        offs = v.get("data_offsets") if isinstance(v, dict) else None
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1] <= data_len):
            raise CheckpointError(f"safetensors entry {k!r} has bad data offsets {offs}", source=str(p))
    try:
        from safetensors.torch import load_file

        return dict(load_file(str(p), device="cpu"))
    except Exception as e:
        raise CheckpointError(f"corrupt .safetensors ({_short(e)})", source=str(p)) from None


# ---------------------------------------------------------------------------------------- torch files

def _pickle_to_scan(p: Path, fmt: str, lay: ZipLayout | None) -> tuple:
    """(bytes, max_pickles, more_follows, label): the pickle torch will read, bounded by MAX_PICKLE_BYTES."""
    if lay is not None:
        info = lay.data_pkl
        if info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(f"{info.filename} is {info.file_size:,} bytes, over the {MAX_PICKLE_BYTES:,}-byte "
                                  "pickle limit", source=str(p))
        data = _read_member(p, info)
        return data, 1, False, info.filename
    with open(p, "rb") as f:
        data = f.read(MAX_PICKLE_BYTES + 1)
    more = len(data) > MAX_PICKLE_BYTES
    return data[:MAX_PICKLE_BYTES], LEGACY_PICKLES, more, "the legacy pickle stream"


def _read_member(p: Path, info) -> bytes:
    try:
        with zipfile.ZipFile(p) as zf, zf.open(info) as f:
            return f.read(info.file_size)  # never past the declared size
    except Exception as e:
        raise CheckpointError(f"corrupt zip member {info.filename} ({_short(e)})", source=str(p)) from None


def _scan_extras(p: Path, lay: ZipLayout) -> tuple:
    """Anomalies of a torch zip, as sentences, and the globals its unread pickle members name (bounded)."""
    anomalies, found = [], []
    budget = MAX_PICKLE_OPS
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
        if info.file_size <= MAX_PICKLE_BYTES and budget > 0:
            try:
                sc = scan_pickles(_read_member(p, info), max_pickles=1, max_ops=budget)
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
    import pickle

    import torch

    lay = zip_layout(p) if fmt in ("torch", "torchscript") else None
    if lay is not None:
        check_zip_bomb(p)
    data, n_pickles, more, label = _pickle_to_scan(p, fmt, lay)
    try:
        scan = scan_pickles(data, max_pickles=n_pickles, max_ops=MAX_PICKLE_OPS, more_follows=more)
    except _ScanBudget as e:
        raise CheckpointError(f"{label} {e}", source=str(p)) from None
    classes = {n: classify_global(n) for n in scan.globals}
    dangerous = [n for n in scan.globals if classes[n] == "dangerous"]
    unknown = [n for n in scan.globals if classes[n] == "unknown"]
    anomalies, extra_globals = _scan_extras(p, lay) if lay is not None else ([], [])
    for n in extra_globals:
        classes.setdefault(n, classify_global(n))
    info = {"anomalies": tuple(anomalies), "globals": tuple(classes.items())}
    advice = "Re-save it as a plain state dict, or pass --trust-checkpoint if you trust its origin"

    if fmt == "torchscript" and not trust:
        raise UnsafeCheckpointError(
            "is a TorchScript archive (torch.jit.save): loading it compiles and runs the code inside. Re-save its "
            "weights (torch.save(torch.jit.load(f).state_dict(), 'weights.pt')), or pass --trust-checkpoint "
            "to have fadiag take torch.jit.load(f).state_dict()", source=str(p), globals_=scan.globals,
            reason="TorchScript archive (code inside)", classes=classes)
    if dangerous and not trust:
        others = [n for n in unknown][:3]
        raise UnsafeCheckpointError(
            f"refusing to unpickle {_few(dangerous, 6)} (can run code"
            + (f"; also not allowed by torch: {_few(others)}" if others else "") + "); this file can run code "
            f"when loaded. {advice}", source=str(p), globals_=dangerous + unknown, classes=classes,
            reason="dangerous globals")
    if anomalies and strict and not trust:
        raise CheckpointError(f"refusing a tampered archive: {'; '.join(anomalies)}. Re-save it with torch.save, "
                              "or pass --trust-checkpoint if you trust its origin", source=str(p))
    if unknown and not trust:
        if any(n.startswith("torch.nn.modules.") for n in unknown):
            advice = ("It is a whole pickled nn.Module (torch.save(model)): save model.state_dict() instead, or pass "
                      "--trust-checkpoint (if you trust its origin) to have fadiag take its state_dict()")
        raise UnsafeCheckpointError(
            f"refusing to unpickle {_few(unknown, 6)}: not on torch's weights-only allow-list, so loading it would "
            f"import and run code from that module. {advice}", source=str(p), globals_=unknown,
            classes=classes, reason="globals not allowed by torch")

    if trust and anomalies:
        info["notes"] = tuple(anomalies)

    def load(trusted: bool):
        # A file object, not the path: torch.load dispatches on a ".safetensors" suffix by name, and we
        # decided the format from the bytes. Warnings (e.g. "Detected pickle protocol 4") would break
        # the one-line stderr contract; the outcome is reported by us instead.
        with open(p, "rb") as f, warnings.catch_warnings(), torch.sparse.check_sparse_tensor_invariants(True):
            warnings.simplefilter("ignore")
            if fmt == "torchscript":  # only with --trust-checkpoint
                return dict(torch.jit.load(f, map_location="cpu").state_dict())
            if not trusted:
                with torch.serialization.safe_globals(_extra_safe_globals()):
                    return torch.load(f, map_location="cpu", weights_only=True)
            return torch.load(f, map_location="cpu", weights_only=False)  # only with --trust-checkpoint

    try:
        if trust and (fmt == "torchscript" or dangerous or unknown):
            return load(trusted=True), info
        return load(trusted=False), info
    except pickle.UnpicklingError as e:
        if trust:
            try:
                return load(trusted=True), info
            except Exception as e2:
                raise CheckpointError(f"cannot load even with --trust-checkpoint ({_short(e2)})", source=str(p)) from None
        if scan.error:  # the stream does not parse: broken, not hostile
            raise CheckpointError(f"corrupt torch checkpoint ({scan.error})", source=str(p)) from None
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


_SAFE_EXTRA: list | None = None


def _extra_safe_globals() -> list:
    """Globals torch's weights-only loader is told to allow, beyond its own list: numpy arrays, scalars and
    dtypes (plain data; object arrays are not among them) and argparse.Namespace (hyperparameters)."""
    global _SAFE_EXTRA
    if _SAFE_EXTRA is None:
        import argparse

        import numpy as np

        out: list = [argparse.Namespace, np.ndarray, np.dtype]
        try:
            from numpy._core import multiarray as ma  # numpy 2
        except ImportError:  # pragma: no cover - numpy 1
            from numpy.core import multiarray as ma  # type: ignore
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            out += [(ma._reconstruct, f"{mod}._reconstruct"), (ma.scalar, f"{mod}.scalar")]
        dtypes = getattr(np, "dtypes", None)
        for name in dir(dtypes) if dtypes is not None else ():
            cls = getattr(dtypes, name)
            if name.endswith("DType") and isinstance(cls, type) and name not in ("ObjectDType", "VoidDType"):
                out.append(cls)
        _SAFE_EXTRA = out
    return _SAFE_EXTRA


# ------------------------------------------------------------------------------ globals: find and class

class _ScanBudget(Exception):
    """The pickle is over a scan budget (the message names it)."""


@dataclass
class PickleScan:
    globals: list
    """"module.name" of every GLOBAL, INST and STACK_GLOBAL, in order of first use, once each."""
    ops: int
    pickles: int
    end: int
    error: str | None = None
    """Why the stream stopped parsing (truncated, unknown opcode), or None."""


_TABLE: list | None = None
# argument kinds and what an opcode does to the last pushes we track (for STACK_GLOBAL's two strings)
_NOARG, _FIXED, _LINE, _TWOLINES, _COUNTED = range(5)
_PUSH, _STR, _GET, _PUT, _MEMO, _SGLOBAL, _STOP, _NOP = range(8)


def _opcode_table() -> list:
    """byte -> (name, argument kind, fixed size or length width, signed length, role), from pickletools."""
    global _TABLE
    if _TABLE is None:
        import pickletools as pt

        table: list = [None] * 256
        widths = {pt.TAKEN_FROM_ARGUMENT1: 1, pt.TAKEN_FROM_ARGUMENT4: 4, pt.TAKEN_FROM_ARGUMENT4U: 4,
                  pt.TAKEN_FROM_ARGUMENT8U: 8}
        for o in pt.opcodes:
            a = o.arg
            if a is None:
                kind, n = _NOARG, 0
            elif o.name in ("GLOBAL", "INST"):
                kind, n = _TWOLINES, 0
            elif a.n == pt.UP_TO_NEWLINE:
                kind, n = _LINE, 0
            elif a.n >= 0:
                kind, n = _FIXED, a.n
            else:
                kind, n = _COUNTED, widths[a.n]
            role = (_STR if o.name in _STRING_OPS else _GET if o.name in ("GET", "BINGET", "LONG_BINGET")
                    else _PUT if o.name in ("PUT", "BINPUT", "LONG_BINPUT") else _MEMO if o.name == "MEMOIZE"
                    else _SGLOBAL if o.name == "STACK_GLOBAL" else _STOP if o.name == "STOP"
                    else _NOP if o.name in _NO_PUSH else _PUSH)
            table[ord(o.code)] = (o.name, kind, n, a is not None and a.n == pt.TAKEN_FROM_ARGUMENT4, role)
        _TABLE = table
    return _TABLE


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
               "STRING"}
_NO_PUSH = {"FRAME", "PROTO", "POP", "POP_MARK"}


def scan_pickles(data: bytes, *, max_pickles: int = 1, max_ops: int = MAX_PICKLE_OPS,
                 more_follows: bool = False) -> PickleScan:
    """Walk the opcodes of up to ``max_pickles`` consecutive pickles in ``data`` (nothing is built or run)
    and list the globals they would import. Raises _ScanBudget past ``max_ops`` opcodes, or when the
    pickles run past the end of ``data`` while ``more_follows`` (the stream is longer than the byte budget)."""
    table = _opcode_table()
    data = bytes(data)
    n = len(data)
    find = data.find
    pos, count, pickles, at_stop = 0, 0, 0, 0
    found: dict = {}
    last2: list = [None, None]  # the last two pushes: a str, or None for anything else
    memo: dict = {}
    error = None
    try:
        while pickles < max_pickles and pos < n:
            entry = table[data[pos]]
            if entry is None:
                error = f"unknown pickle opcode 0x{data[pos]:02x} at byte {pos}"
                break
            name, kind, k, signed, role = entry
            pos += 1
            count += 1
            if count > max_ops:
                raise _ScanBudget(f"has over {max_ops:,} pickle opcodes (the scan limit)")
            value = None
            if kind == _FIXED:
                if pos + k > n:
                    raise EOFError
                if role == _GET or role == _PUT:
                    value = int.from_bytes(data[pos:pos + k], "little")
                pos += k
            elif kind == _COUNTED:
                if pos + k > n:
                    raise EOFError
                length = int.from_bytes(data[pos:pos + k], "little", signed=signed)
                if length < 0:
                    error = f"negative length in {name} at byte {pos}"
                    break
                pos += k
                if pos + length > n:
                    raise EOFError
                if role == _STR and length <= 4096:
                    value = data[pos:pos + length].decode("utf-8", "replace")
                pos += length
            elif kind == _LINE:
                e = find(b"\n", pos)
                if e < 0:
                    raise EOFError
                raw, pos = data[pos:e], e + 1
                if role == _STR:
                    value = (raw.strip()[1:-1].decode("latin-1") if name == "STRING"
                             else raw.decode("raw-unicode-escape", "replace"))
                elif role == _GET or role == _PUT:
                    value = int(raw) if raw.strip().isdigit() else -1
            elif kind == _TWOLINES:
                e1 = find(b"\n", pos)
                e2 = find(b"\n", e1 + 1) if e1 >= 0 else -1
                if e2 < 0:
                    raise EOFError
                mod, attr = data[pos:e1].decode("utf-8", "replace"), data[e1 + 1:e2].decode("utf-8", "replace")
                found.setdefault(f"{mod}.{attr}", None)
                pos = e2 + 1
            if role == _PUSH:
                last2[0], last2[1] = last2[1], None
            elif role == _STR:
                last2[0], last2[1] = last2[1], value
            elif role == _GET:
                last2[0], last2[1] = last2[1], memo.get(value)
            elif role == _PUT:
                memo[value] = last2[1]
            elif role == _MEMO:
                memo[len(memo)] = last2[1]
            elif role == _SGLOBAL:
                a, b = last2
                found.setdefault(f"{a}.{b}" if isinstance(a, str) and isinstance(b, str)
                                 else "(unresolved STACK_GLOBAL)", None)
                last2[0], last2[1] = None, None
            elif role == _STOP:
                pickles += 1
                at_stop = count
                last2[0], last2[1] = None, None
                memo.clear()
        if error is None and pickles < max_pickles and count > at_stop:
            raise EOFError  # the data ended inside a pickle
    except EOFError:
        if more_follows:
            raise _ScanBudget(f"is over {n:,} bytes (the pickle scan limit)") from None
        error = f"truncated pickle stream (ends inside an opcode at byte {n})"
    except (ValueError, KeyError) as e:
        error = f"malformed pickle ({_short(e)})"
    if error is None and pickles == 0:
        error = "empty or truncated pickle stream"
    return PickleScan(globals=list(found), ops=count, pickles=pickles, end=pos, error=error)


def pickle_globals(data: bytes, limit: int = 64) -> list[str]:
    """Every "module.name" a pickle stream would import (GLOBAL, INST, STACK_GLOBAL), read without running
    anything; up to ``limit`` consecutive pickles, within the scan budget."""
    try:
        return scan_pickles(data, max_pickles=limit).globals
    except _ScanBudget:
        return []


#: Modules whose every global can run code or touch the system (picklescan and modelscan class them alike).
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "pty", "runpy", "importlib", "pickle", "_pickle",
    "cPickle", "dill", "marshal", "ctypes", "multiprocessing", "code", "codeop", "webbrowser", "commands",
    "popen2", "platform", "asyncio", "types", "operator", "functools", "signal", "threading", "_thread", "pdb",
    "bdb", "timeit", "profile", "cProfile", "trace", "pydoc", "zipimport", "venv", "ensurepip", "pip",
    "setuptools", "distutils", "requests", "urllib", "urllib2", "http", "httplib", "ftplib", "smtplib",
    "telnetlib", "aiohttp", "tempfile", "io", "_io", "joblib", "torch.hub", "torch.jit", "torch.package",
    "torch.utils.cpp_extension", "torch._dynamo", "torch._inductor", "numpy.testing", "numpy.f2py",
    "numpy.distutils", "_posixsubprocess",
})
DANGEROUS_BUILTINS = frozenset({
    "eval", "exec", "execfile", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals",
    "locals", "vars", "input", "breakpoint", "apply", "file", "reload", "help", "exit", "quit", "memoryview",
})
DANGEROUS_NAMES = frozenset({
    "torch.load", "torch.serialization.load", "torch.serialization.pickle", "torch.storage._load_from_bytes",
    "torch._C._import_ir_module_from_package", "numpy.load", "numpy.lib.npyio.load", "pandas.read_pickle",
    "torch.serialization._load",
})


def _normalise(name: str) -> str:
    """Python 2 names as torch's unpickler maps them (``__builtin__.set`` -> ``builtins.set``)."""
    try:
        from torch._utils import IMPORT_MAPPING, NAME_MAPPING
    except ImportError:  # pragma: no cover
        return name
    mod, _, attr = name.rpartition(".")
    if (mod, attr) in NAME_MAPPING:
        mod, attr = NAME_MAPPING[(mod, attr)]
    elif mod in IMPORT_MAPPING:
        mod = IMPORT_MAPPING[mod]
    return f"{mod}.{attr}"


_ALLOWED: frozenset | None = None


def _allowed_names() -> frozenset:
    global _ALLOWED
    if _ALLOWED is None:
        names: set = set()
        try:
            from torch import _weights_only_unpickler as wu

            names |= set(wu._get_allowed_globals())
            extra = _extra_safe_globals()
            names |= {x[1] if isinstance(x, tuple) else f"{x.__module__}.{x.__qualname__}" for x in extra}
        except Exception:  # pragma: no cover - torch internals moved: fall back to the rebuild essentials
            names |= {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                      "torch.FloatStorage", "torch.LongStorage", "torch.storage.UntypedStorage"}
        _ALLOWED = frozenset(names)
    return _ALLOWED


def classify_global(name: str) -> str:
    """"dangerous" (known to run code or touch the system), "allowed" (torch's weights-only loader admits
    it, or fadiag's numpy/Namespace additions) or "unknown" (anything else: arbitrary importable code)."""
    n = _normalise(name)
    if n in DANGEROUS_NAMES:
        return "dangerous"
    mod, _, attr = n.rpartition(".")
    if mod in ("builtins", "__builtin__") and attr in DANGEROUS_BUILTINS:
        return "dangerous"
    if any(mod == m or mod.startswith(m + ".") for m in DANGEROUS_MODULES):
        return "dangerous"
    if n in _allowed_names():
        return "allowed"
    return "unknown"


def _npz_pickle_globals(p: Path) -> list[str]:
    """Globals inside the pickled object arrays of an .npz (the .npy payload after its header), bounded."""
    names: list[str] = []
    budget = MAX_PICKLE_OPS
    try:
        with zipfile.ZipFile(p) as zf:
            for info in zf.infolist():
                if info.file_size > MAX_PICKLE_BYTES or budget <= 0:
                    continue
                with zf.open(info) as f:
                    raw = f.read(info.file_size)
                if raw[:6] != b"\x93NUMPY":
                    continue
                hlen = int.from_bytes(raw[8:10], "little") if raw[6] == 1 else int.from_bytes(raw[8:12], "little")
                start = 10 + hlen if raw[6] == 1 else 12 + hlen
                sc = scan_pickles(raw[start:], max_ops=budget)
                budget -= sc.ops
                names += sc.globals
    except Exception:
        return sorted(set(names))
    return sorted(set(names))


def _short(e: Exception, limit: int = 160) -> str:
    s = " ".join(f"{type(e).__name__}: {e}".split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _few(items, n: int = 3) -> str:
    items = list(items)
    s = ", ".join(str(x) for x in items[:n])
    return s + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


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
