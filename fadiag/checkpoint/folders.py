"""Checkpoint folders (alberta-framework, Hugging Face) are read as untrusted data (docs/safety.md, "Folders").

:func:`folder_files` lists a folder before anything in it is opened: every read stays inside it (a symlink
that leads out of the folder is refused, whatever it is named; a symlinked folder is not followed), nothing
but regular files is read (a pipe could block forever), and the files' sizes, as the file system declares
them, are held to the checkpoint limit before anything is hashed or allocated (a sparse 20 GiB file is
refused at once, not read). :func:`load_json` parses a metadata file with size, depth and type checks.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from . import limits as _ck  # read at call time (callers may lower them)

from ..errors import CheckpointError

#: more entries than this in a checkpoint folder is not a checkpoint
MAX_FOLDER_FILES = 100_000
#: metadata JSON: bytes and nesting
MAX_JSON_BYTES = 16 * 1024**2
MAX_JSON_DEPTH = 64


def _inside(target: Path, root: Path) -> bool:
    return target == root or root in target.parents


def _hub_blobs(root: Path) -> Path | None:
    """A Hugging Face cache snapshot (``models--org--name/snapshots/<rev>``) links its files to ``../../blobs``:
    those links stay inside the cached model, so they are read."""
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith(("models--", "datasets--")):
        return root.parent.parent / "blobs"
    return None


def folder_files(folder, *, src: str | None = None, counted=None) -> list:
    """[(path relative to the folder, resolved path, size)] of every regular file under ``folder``, sorted,
    checked as the module docstring says (CheckpointError, exit 2, otherwise). ``counted(relative path)``: the
    files whose sizes count toward the limit (default: all; the ones fadiag may read)."""
    src = src or str(folder)
    try:
        root = Path(folder).resolve(strict=True)
    except (OSError, RuntimeError):
        raise CheckpointError("cannot resolve the folder", source=src) from None
    blobs = _hub_blobs(root)
    out, total = [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            try:
                real = p.resolve(strict=True)
                st = os.stat(real)
            except (OSError, RuntimeError):
                raise CheckpointError(f"{rel}: a broken symlink or unreadable entry", source=src) from None
            if not (_inside(real, root) or (blobs is not None and p.is_symlink() and _inside(real, blobs))):
                raise CheckpointError(f"{rel} is a symlink to {real}, outside the folder: refusing to read out of "
                                      "it (copy the file in if you mean it)", source=src)
            if stat.S_ISDIR(st.st_mode):
                continue  # a symlinked folder inside the folder: its files are listed where they are
            if not stat.S_ISREG(st.st_mode):
                raise CheckpointError(f"{rel} is not a regular file (a pipe, socket or device)", source=src)
            total += st.st_size if counted is None or counted(rel) else 0
            if total > _ck.MAX_CHECKPOINT_BYTES:
                raise CheckpointError(f"the folder's files declare over {_ck.MAX_CHECKPOINT_BYTES:,} bytes (the "
                                      f"checkpoint limit; {rel} is {st.st_size:,})", source=src)
            out.append((rel, real, st.st_size))
            if len(out) > MAX_FOLDER_FILES:
                raise CheckpointError(f"over {MAX_FOLDER_FILES:,} files: not a checkpoint folder", source=src)
    return sorted(out)


def load_json(path: Path, src: str, *, name: str | None = None, want: type = dict):
    """A metadata JSON file: at most MAX_JSON_BYTES, nested at most MAX_JSON_DEPTH deep, of type ``want``."""
    name = name or path.name
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CheckpointError(f"{name} is over the {MAX_JSON_BYTES:,}-byte limit for metadata", source=src)
        obj = json.loads(path.read_text(encoding="utf-8"))
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{name} is nested too deeply", source=src) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"cannot read {name} ({type(e).__name__})", source=src) from None
    if json_depth(obj) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{name} is nested over {MAX_JSON_DEPTH} levels deep", source=src)
    if not isinstance(obj, want):
        raise CheckpointError(f"{name} is not a JSON {'object' if want is dict else want.__name__}", source=src)
    return obj


def json_depth(obj) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion limit to hit)."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        depth = max(depth, d)
        if depth > MAX_JSON_DEPTH:
            return depth
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return depth
