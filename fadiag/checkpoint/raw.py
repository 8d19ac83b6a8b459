"""What a read checkpoint is (RawCheckpoint), its digest, and the short texts every reader's messages use."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RawCheckpoint:
    """What a checkpoint file holds, read safely.

    Attributes:
        path: the file, as given.
        format: torch, torch-legacy, torchscript, safetensors, npz; for folders alberta-orbax (fadiag.checkpoint.alberta),
            hf-safetensors or hf-torch (fadiag.checkpoint.hf).
        sha256: hex digest of the file's bytes (of a folder: a digest over the files read).
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


def short(e: Exception, limit: int = 160) -> str:
    """An exception as one short line: "Type: message", cut at ``limit`` characters."""
    s = " ".join(f"{type(e).__name__}: {e}".split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def few(items, n: int = 3) -> str:
    """The first ``n`` items, then how many more."""
    items = list(items)
    s = ", ".join(str(x) for x in items[:n])
    return s + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
