"""Imported last by the ``--jobs`` fork server (``fadiag.run.sweep.WORKER_PRELOAD``) and nowhere else.

The fork server imported torch so that its workers need not; at its own exit that makes the interpreter's
teardown slow (~0.5 s), and the fork server holds the command's stdout and stderr open until it is done, so a
reader of the output waits for it. The fork server has nothing to flush or clean up (its workers exit by
``os._exit`` already), so its exit skips the teardown. Anywhere but the fork server this module does nothing.
"""

from __future__ import annotations

import atexit
import os
import sys


def _in_fork_server() -> bool:
    main = sys.modules.get("__main__")
    return sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules and \
        getattr(main, "__file__", None) is None and any(
            f.f_code.co_name == "main" and f.f_code.co_filename.endswith("forkserver.py")
            for f in _frames())


def _frames():
    f = sys._getframe()
    while f is not None:
        yield f
        f = f.f_back


if _in_fork_server():
    atexit.register(os._exit, 0)  # registered last, run first
