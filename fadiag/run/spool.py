"""Spool folders of the out-of-core edge evidence: made here, removed on exit and on SIGINT/SIGTERM.

torch-free, so the CLI's signal handler can call :func:`cleanup_spools` without importing torch.
On POSIX the spool files are also unlinked as soon as they are mapped (the mapping keeps the data), so
even a SIGKILL leaves no spool bytes behind; only the empty folder can remain in that case.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading

_DIRS: set = set()
_INSTALLED = False


def make_spool_dir(parent: str | None = None) -> str:
    """A fresh private folder under ``parent`` (default: the system temp folder), registered for removal."""
    if parent is not None and not os.path.isdir(parent):
        raise ValueError(f"spool folder {parent!r} does not exist")
    d = tempfile.mkdtemp(prefix="fadiag-spool-", dir=parent)
    _DIRS.add(d)
    _install()
    return d


def remove_spool_dir(d: str) -> None:
    shutil.rmtree(d, ignore_errors=True)
    _DIRS.discard(d)


def cleanup_spools() -> None:
    for d in list(_DIRS):
        remove_spool_dir(d)


def _on_term(signum, frame):
    cleanup_spools()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install() -> None:
    """atexit always; a SIGTERM handler only where none is set (the CLI installs its own, which calls
    cleanup_spools). SIGINT raises KeyboardInterrupt by default, whose unwinding closes the spool."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    atexit.register(cleanup_spools)
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _on_term)
        except (ValueError, OSError):  # not settable here (embedded interpreter)
            pass
