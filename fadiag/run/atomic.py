"""Atomic file output: a temp file beside the target, then a rename. Never a partial file.

Temp files in flight are registered so that the CLI's SIGINT/SIGTERM handler can remove them before it
exits (``cleanup_temp_files``); a rename either happened or it did not.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

_IN_FLIGHT: set = set()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temp path in the target's folder; on success rename it over ``path``, else remove it."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix or ".tmp", dir=folder)
    os.close(fd)
    _IN_FLIGHT.add(tmp)
    try:
        yield tmp
        # mkstemp makes the file 0600; give it the mode a plain open() would (or the replaced file's).
        try:
            mode = p.stat().st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        _IN_FLIGHT.discard(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def cleanup_temp_files() -> None:
    for tmp in list(_IN_FLIGHT):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _IN_FLIGHT.discard(tmp)
