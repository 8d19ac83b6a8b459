"""Safe reading of checkpoints: .pt/.pth (torch zip or legacy pickle), .safetensors, .npz.

Checkpoints are untrusted data (DESIGN.md, Safety): torch files are read with
``torch.load(weights_only=True)``; safetensors and npz (``allow_pickle=False``) never unpickle. A torch
file that needs arbitrary unpickling is refused with the offending globals named, unless the caller
passes ``trust=True`` (the CLI's ``--trust-checkpoint``), which the report then records.
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

FORMATS = ("torch", "torch-legacy", "safetensors", "npz")


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
    """

    path: str
    format: str
    sha256: str
    trusted: bool
    content: Any = field(repr=False)

    def describe(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "format": self.format, "trusted": self.trusted}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sniff_format(path: Path) -> str:
    """Decide the format from the file's first bytes (the suffix can lie), falling back to the suffix."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) == 0:
        raise CheckpointError("file is empty", source=str(path))
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointError(f"corrupt zip container ({e})", source=str(path)) from None
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        raise CheckpointError("zip file is neither a torch checkpoint nor an .npz archive", source=str(path))
    # safetensors first: its 8-byte little-endian header length can start with 0x80 like a pickle.
    if len(head) >= 9 and head[8:9] == b"{":
        fits = int.from_bytes(head[:8], "little") <= path.stat().st_size - 8
        if fits or head[:1] != b"\x80":
            return "safetensors"  # a header length past the end is reported by the safetensors reader
    if head[:1] == b"\x80":
        return "torch-legacy"
    raise CheckpointError(
        "unrecognised file format (expected a torch .pt/.pth, .safetensors or .npz file)", source=str(path)
    )


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> RawCheckpoint:
    """Read ``path`` safely and return its content. Raises CheckpointError (exit code 2) on any problem."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError("no such file", source=str(path))
    if not p.is_file():
        raise CheckpointError("not a regular file", source=str(path))
    size = p.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"file is {size} bytes, over the {MAX_CHECKPOINT_BYTES}-byte limit", source=str(path))
    fmt = sniff_format(p)
    digest = sha256_file(p)
    if fmt == "npz":
        content = _read_npz(p)
    elif fmt == "safetensors":
        content = _read_safetensors(p)
    else:
        content = _read_torch(p, trust=trust)
    return RawCheckpoint(path=str(path), format=fmt, sha256=digest, trusted=bool(trust), content=content)


#: An archive expanding past this many bytes, at over MAX_ZIP_RATIO times its size, is refused as a bomb.
MAX_ZIP_EXPANDED = 256 * 1024**2
MAX_ZIP_RATIO = 200


def check_zip_bomb(p: Path, err_cls=CheckpointError) -> None:
    """Refuse a zip (npz) whose members expand absurdly: read the sizes from the directory, not the data."""
    try:
        with zipfile.ZipFile(p) as zf:
            expanded = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # the reader reports the broken archive
    size = max(p.stat().st_size, 1)
    if expanded > MAX_ZIP_EXPANDED and expanded > MAX_ZIP_RATIO * size:
        raise err_cls(f"archive expands to {expanded:,} bytes from {size:,} (over {MAX_ZIP_RATIO}x): "
                      "refusing a likely zip bomb", source=str(p))


def _read_npz(p: Path) -> dict:
    import numpy as np
    import torch

    check_zip_bomb(p)
    try:
        with np.load(p, allow_pickle=False) as z:
            out = {}
            for k in z.files:
                arr = z[k]
                if arr.dtype.kind not in "biuf":
                    raise CheckpointError(f"array {k!r} has unsupported dtype {arr.dtype}", source=str(p))
                out[k] = torch.from_numpy(np.ascontiguousarray(arr))
            return out
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            names = _npz_pickle_globals(p)
            what = ", ".join(names) if names else "pickled Python objects"
            raise UnsafeCheckpointError(f"npz holds {what}; refusing to unpickle", source=str(p),
                                        globals_=names) from None
        raise CheckpointError(f"corrupt .npz ({_short(e)})", source=str(p)) from None
    except Exception as e:  # zipfile/zlib/OSError/EOF: all mean a broken file
        raise CheckpointError(f"corrupt .npz ({_short(e)})", source=str(p)) from None


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


def _read_torch(p: Path, *, trust: bool) -> Any:
    import pickle

    import torch

    def load(trusted: bool):
        # A file object, not the path: torch.load dispatches on a ".safetensors" suffix by name, and we
        # decided the format from the bytes. Warnings (e.g. "Detected pickle protocol 4") would break
        # the one-line stderr contract; the outcome is reported by us instead.
        with open(p, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not trusted:
                return torch.load(f, map_location="cpu", weights_only=True)
            return torch.load(f, map_location="cpu", weights_only=False)  # only with --trust-checkpoint

    try:
        return load(trusted=False)
    except pickle.UnpicklingError as e:
        if trust:
            try:
                return load(trusted=True)
            except Exception as e2:
                raise CheckpointError(f"cannot load even with --trust-checkpoint ({_short(e2)})", source=str(p)) from None
        names = _unsafe_globals(p, e)
        if not names:
            # No global to blame: the pickle stream itself is broken, not hostile.
            raise CheckpointError(f"corrupt torch checkpoint ({_short(e)})", source=str(p)) from None
        what = ", ".join(names)
        raise UnsafeCheckpointError(
            f"refusing to unpickle {what}; this file can run code when loaded. "
            "Re-save it as a plain state dict, or pass --trust-checkpoint if you trust its origin",
            source=str(p),
            globals_=names,
        ) from None
    except Exception as e:
        raise CheckpointError(f"corrupt or unreadable torch checkpoint ({_short(e)})", source=str(p)) from None


def _unsafe_globals(p: Path, err: Exception) -> list[str]:
    """Names of the globals a torch file would import, found by reading its pickle opcodes (never run)."""
    import re

    names: list[str] = []
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                for n in zf.namelist():
                    if n.endswith(".pkl"):
                        names += pickle_globals(zf.read(n))
        else:
            names = pickle_globals(p.read_bytes())
    except Exception:
        names = []
    if not names:
        names = re.findall(r"GLOBAL ([\w.]+)", str(err))
    allowed = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
               "torch.FloatStorage", "torch.LongStorage", "torch.storage.UntypedStorage"}
    unsafe = sorted({n for n in names if n not in allowed and not n.startswith("torch._tensor")})
    return unsafe or sorted(set(names))


def pickle_globals(data: bytes, limit: int = 64) -> list[str]:
    """Every "module.name" a pickle stream would import (GLOBAL, INST, STACK_GLOBAL), read with pickletools:
    nothing is executed. Scans consecutive pickles (legacy torch files hold several)."""
    import io
    import pickletools

    out: list[str] = []
    buf = io.BytesIO(data)
    for _ in range(limit):
        if buf.tell() >= len(data):
            break
        strings: list[str] = []
        memo: dict = {}
        try:
            for op, arg, _pos in pickletools.genops(buf):
                if op.name in ("GLOBAL", "INST"):
                    out.append(str(arg).replace(" ", "."))
                elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                                 "BINSTRING", "STRING"):
                    strings.append(arg if isinstance(arg, str) else str(arg))
                elif op.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                    memo[int(arg)] = strings[-1]
                elif op.name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                    strings.append(memo[int(arg)])
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    out.append(f"{strings[-2]}.{strings[-1]}")
                if op.name == "STOP":
                    break
        except Exception:
            break
    return out


def _npz_pickle_globals(p: Path) -> list[str]:
    """Globals inside the pickled object arrays of an .npz (the .npy payload after its header)."""
    names: list[str] = []
    try:
        with zipfile.ZipFile(p) as zf:
            for n in zf.namelist():
                raw = zf.read(n)
                if raw[:6] != b"\x93NUMPY":
                    continue
                hlen = int.from_bytes(raw[8:10], "little") if raw[6] == 1 else int.from_bytes(raw[8:12], "little")
                start = 10 + hlen if raw[6] == 1 else 12 + hlen
                names += pickle_globals(raw[start:])
    except Exception:
        return []
    return sorted(set(names))


def _short(e: Exception, limit: int = 160) -> str:
    s = " ".join(f"{type(e).__name__}: {e}".split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def find_state_dict(content: Any, key: str = "auto", strip_prefix: str = "auto", *, source: str | None = None,
                    model_keys=None):
    """Locate the model's state dict inside a checkpoint's content.

    key: "auto" (a flat dict of tensors, else the first of STATE_DICT_KEYS holding one) or an explicit
    key, dotted for nesting ("trainer.model"). strip_prefix: "auto" strips one wrapper prefix shared by
    every key (AUTO_PREFIXES), "" strips nothing, anything else is stripped where present. With
    ``model_keys`` (the model's own state-dict keys), "auto" strips a prefix only when the stripped keys match
    the model better than the unstripped ones (a model with ``self.net = Sequential(...)`` keeps its "net.").
    Returns (state_dict, key_used).
    """
    if key != "auto":
        obj = content
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                raise CheckpointError(f"no state dict under key {key!r}", source=source)
            obj = obj[part]
        sd, used = obj, key
    elif isinstance(content, dict) and _mostly_tensors(content):
        sd, used = content, ""
    else:
        sd, used = None, None
        if isinstance(content, dict):
            for k in STATE_DICT_KEYS:
                if k in content and isinstance(content[k], dict) and _mostly_tensors(content[k]):
                    sd, used = content[k], k
                    break
        if sd is None:
            keys = list(content)[:8] if isinstance(content, dict) else type(content).__name__
            raise CheckpointError(
                f"cannot find a state dict (looked for a dict of tensors or keys {', '.join(STATE_DICT_KEYS)}; "
                f"found {keys}); set checkpoint.state_dict in the spec",
                source=source,
            )
    import torch

    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError("state dict holds no tensors", source=source)
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


def _mostly_tensors(d: dict) -> bool:
    import torch

    vals = list(d.values())
    return bool(vals) and sum(isinstance(v, torch.Tensor) for v in vals) >= max(1, len(vals) // 2 + 1) and all(
        isinstance(k, str) for k in d
    )
