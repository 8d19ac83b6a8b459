"""Containers before content: a zip's directory as torch reads it, the format from the first bytes, and the
decompressed-byte budget every zip (npz and torch) is held to. Nothing here inflates or unpickles a member."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import limits as _ck  # read at call time (callers may lower them)

from ..errors import CheckpointError
from .raw import short


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
        raise CheckpointError(f"corrupt zip container ({short(e)})", source=str(p)) from None
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


def check_zip_bomb(p: Path, err_cls=CheckpointError) -> None:
    """Refuse a zip (npz or torch) whose members expand absurdly: read the sizes from the directory, not the
    data. The readers (numpy's, torch's, ours) never inflate a member past its declared size."""
    try:
        with zipfile.ZipFile(p) as zf:
            expanded = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # the reader reports the broken archive
    size = max(p.stat().st_size, 1)
    if expanded > _ck.MAX_ZIP_EXPANDED and expanded > _ck.MAX_ZIP_RATIO * size:
        raise err_cls(f"archive expands to {expanded:,} bytes from {size:,} (over {_ck.MAX_ZIP_RATIO}x past "
                      f"{_ck.MAX_ZIP_EXPANDED:,} bytes): refusing a likely zip bomb", source=str(p))
    if expanded > _ck.MAX_CHECKPOINT_BYTES:
        raise err_cls(f"archive expands to {expanded:,} bytes, over the {_ck.MAX_CHECKPOINT_BYTES:,}-byte limit",
                      source=str(p))


def read_member(p: Path, info) -> bytes:
    """One zip member's bytes, never past its declared size."""
    try:
        with zipfile.ZipFile(p) as zf, zf.open(info) as f:
            return f.read(info.file_size)  # never past the declared size
    except Exception as e:
        raise CheckpointError(f"corrupt zip member {info.filename} ({short(e)})", source=str(p)) from None
