"""The --jobs fork server (fadiag.run.sweep._executor): preloaded with torch and fadiag, and its exit skips the
interpreter's teardown, which fadiag.run._forkserver does only inside the fork server itself."""

from __future__ import annotations

import subprocess
import sys

from fadiag.run import sweep


def test_exit_shortcut_is_inert_outside_the_fork_server():
    code = ("import atexit, fadiag.run._forkserver as f; print(f._in_fork_server()); "
            "import sys; sys.stdout.write('flushed at exit')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "False\nflushed at exit", r.stderr


def test_preload_names_importable_modules_and_ends_with_the_exit_shortcut():
    import importlib

    assert sweep.WORKER_PRELOAD[0] == "torch" and sweep.WORKER_PRELOAD[-1] == "fadiag.run._forkserver"
    for name in sweep.WORKER_PRELOAD:
        importlib.import_module(name)  # a typo would be skipped silently by the fork server


def test_pool_workers_start_from_the_preloaded_server():
    """A worker finds torch imported before it ran anything (forked from the server, not spawned bare)."""
    with sweep._executor(1, 1) as ex:
        assert ex.submit(_torch_was_loaded).result() is True


def _torch_was_loaded() -> bool:
    return "torch" in sys.modules and "fadiag.families.audit.api" in sys.modules
