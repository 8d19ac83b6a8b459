"""Resource budgets for tests, measured in what they mean: CPU seconds and address space, never wall time.

A loaded CI machine stretches wall time by any factor; the CPU time a process spends refusing a bad input
does not change with load. "Refused up front" therefore means: refused within a CPU budget (and an
address-space cap), in this process (``cpu_budget``) or in a child (``run_capped``).

``HANG_GUARD_S`` only stops a child that hangs forever (a deadlock, a wait on a pipe): it is half an hour,
no correct run comes near it on any machine, and no test asserts anything about speed with it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time

HANG_GUARD_S = 1800


class CPUBudgetExceeded(BaseException):
    """BaseException, so the code under test cannot swallow it with ``except Exception``."""


@contextlib.contextmanager
def cpu_budget(seconds: float):
    """Raise CPUBudgetExceeded once this process has spent ``seconds`` more CPU time (all threads, user + sys:
    ITIMER_PROF) inside the block."""
    def on_prof(*_):
        raise CPUBudgetExceeded(f"used more than {seconds} CPU seconds")

    old = signal.signal(signal.SIGPROF, on_prof)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_capped(args, *, cpu_seconds: float, as_bytes: int | None = None, cwd=None, env=None):
    """``python -m fadiag ARGS`` in a fresh interpreter whose kernel limits are ``cpu_seconds`` of CPU
    (RLIMIT_CPU: SIGXCPU past it) and ``as_bytes`` of address space. Returns (CompletedProcess, cpu_used)."""
    def limits():
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_seconds), hard))
        if as_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (as_bytes, resource.getrlimit(resource.RLIMIT_AS)[1]))

    before = children_cpu()
    r = subprocess.run([sys.executable, "-m", "fadiag", *map(str, args)], capture_output=True, text=True,
                       timeout=HANG_GUARD_S, preexec_fn=limits, cwd=cwd,
                       env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return r, children_cpu() - before


def process_cpu(pid: int) -> float:
    """CPU seconds (user + sys) a live process has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_cpu(proc, seconds: float, poll: float = 0.01) -> bool:
    """Block until ``proc`` (a Popen) has used ``seconds`` of CPU; False if it exited first."""
    while proc.poll() is None:
        try:
            if process_cpu(proc.pid) >= seconds:
                return True
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(poll)
    return False
