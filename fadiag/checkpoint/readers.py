"""Readers that never unpickle: .npz (``allow_pickle=False``; an object array is refused with the globals
its pickle names) and .safetensors (the header validated before the library reads it)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from . import limits as _ck  # read at call time (callers may lower them)

from ..errors import CheckpointError, UnsafeCheckpointError
from .archive import check_zip_bomb
from .pickles import classify_global, scan_pickles
from .raw import few as _few
from .raw import short as _short

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



def _npz_pickle_globals(p: Path) -> list[str]:
    """Globals inside the pickled object arrays of an .npz (the .npy payload after its header), bounded."""
    names: list[str] = []
    budget = _ck.MAX_PICKLE_OPS
    try:
        with zipfile.ZipFile(p) as zf:
            for info in zf.infolist():
                if info.file_size > _ck.MAX_PICKLE_BYTES or budget <= 0:
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


