"""The sweep journal (``--resume FILE.jsonl``, fadiag.run.sweep): one JSON line per finished report, keyed on what
decides it (the checkpoint's resolved path, its bytes and its sidecar spec's, the command's settings and
fadiag's version). torch-free."""

from __future__ import annotations

import hashlib
import json
import os

from .. import __version__
from ..errors import InputError


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def settings_key(kind: str, opts: dict) -> str:
    """What decides a report besides the checkpoint: the command, its options and fadiag's version.
    Options that cannot change a report (quiet) are left out; files given as options enter by content."""
    o = {k: v for k, v in sorted(opts.items()) if k not in ("quiet",)}
    for k in ("spec", "data", "init", "tensors", "truth", "held_out"):
        if o.get(k) and os.path.isfile(str(o[k])):
            o[k] = file_sha256(str(o[k]))
    text = json.dumps({"kind": kind, "opts": o, "fadiag": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_key(path: str) -> tuple:
    """What identifies one checkpoint in the journal: its resolved path, its bytes (sha256) and the bytes of the
    sidecar specs beside it; two identical copies a.pt, b.pt are two entries. (None, ...) for a missing file."""
    if not os.path.isfile(path):
        return (os.path.realpath(path), None, "")  # a missing file fails in its loader
    stem = os.path.splitext(path)[0]
    side = [file_sha256(stem + s) for s in (".yaml", ".yml") if os.path.isfile(stem + s)]
    return (os.path.realpath(path), file_sha256(path), ",".join(side))


def read_journal(path: str) -> tuple:
    """({(resolved path, sha256, sidecar digests, settings key): report}, torn) from a journal written by a previous
    sweep. A last line with no newline (the sweep was killed while writing it) is torn: left out here, and
    :class:`Journal` cuts it off before appending. Any other line that is not an entry is an error."""
    done: dict = {}
    if not os.path.exists(path):
        return done, False
    if not os.path.isfile(path):
        raise InputError("is not a regular file", source=f"--resume {path}")
    with open(path, "rb") as f:
        data = f.read()
    complete = data[:data.rfind(b"\n") + 1]
    for i, line in enumerate(complete.split(b"\n")[:-1]):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
            meta = obj.pop("sweep")
            if "resolved" in meta:  # entries from before the path was part of the key are never reused
                done[(meta["resolved"], meta["sha256"], meta.get("sidecars", ""), meta["settings"])] = obj
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise InputError(f"line {i + 1} is not a fadiag sweep journal entry", source=f"--resume {path}") from None
    return done, len(complete) < len(data)


class Journal:
    """The sweep journal, appended to; a torn last line (see :func:`read_journal`) is cut off first."""

    def __init__(self, path: str):
        self.path = path
        self.f = open(path, "ab", buffering=0)
        size = self.f.seek(0, os.SEEK_END)
        if size:
            with open(path, "rb") as r:
                data = r.read()
            keep = data.rfind(b"\n") + 1
            if keep < size:
                self.f.truncate(keep)

    def write(self, report: dict, path: str, key: tuple, settings: str) -> None:
        line = dict(report)
        line["sweep"] = {"path": path, "resolved": key[0], "sha256": key[1], "sidecars": key[2], "settings": settings}
        self.f.write((json.dumps(line, allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()
