"""Worker processes of a sweep (``--jobs N``, fadiag.run.sweep) never outlive it."""

from __future__ import annotations

import os
import sys


#: how often a worker checks that the process that started it is alive (seconds)
PARENT_POLL_S = 0.5


def watch_parent() -> None:
    """In a worker process: exit as soon as the process that started it is gone (SIGTERM, SIGKILL, a crash), never
    finish a checkpoint nobody will read. On Linux the kernel sends SIGKILL when the worker's own parent dies
    (prctl PR_SET_PDEATHSIG; the forkserver dies with the sweep); a thread also waits on multiprocessing's
    sentinel of the starting process, or polls its pid, every PARENT_POLL_S seconds."""
    import multiprocessing as mp
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: the thread below still watches
            pass
    parent = mp.parent_process()
    ppid = parent.pid if parent is not None and parent.pid else os.getppid()

    def alive() -> bool:
        if parent is not None and getattr(parent, "_sentinel", None) is not None:
            return parent.is_alive()
        try:
            os.kill(ppid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return os.getppid() != 1

    def watch() -> None:
        import time

        while alive():
            time.sleep(PARENT_POLL_S)
        os._exit(143)

    threading.Thread(target=watch, name="fadiag-parent-watch", daemon=True).start()
