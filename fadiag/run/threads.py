"""The cores this process may use: CPU affinity capped by a cgroup CPU quota (docs/scale.md, "Threads").

torch-free, so ``import fadiag.cli`` stays light.
"""

from __future__ import annotations

import math
import os


def cpu_count() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    try:
        n = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        n = max(1, os.cpu_count() or 1)
    quota = cgroup_cpu_limit()
    return max(1, min(n, math.ceil(quota))) if quota else n


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup", proc: str = "/proc/self/cgroup") -> float | None:
    """CPUs granted by this process's cgroup quota (quota / period: cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``), or None when there is none or it cannot be read."""
    paths = {}
    try:
        with open(proc, encoding="utf-8") as f:
            for line in f:
                _, ctrl, path = line.rstrip("\n").split(":", 2)
                for c in ctrl.split(","):
                    paths[c] = path.lstrip("/")
    except (OSError, ValueError):
        pass
    v2 = [os.path.join(root, paths.get("", ""), "cpu.max"), os.path.join(root, "cpu.max")]
    v1 = [os.path.join(root, d, paths.get("cpu", "")) for d in ("cpu", "cpu,cpuacct")]
    v1 += [os.path.join(root, d) for d in ("cpu", "cpu,cpuacct")]
    for f in v2:
        parts = _read(f).split()
        if len(parts) == 2:
            return _ratio(parts[0], parts[1])
    for d in v1:
        q, p = _read(os.path.join(d, "cpu.cfs_quota_us")), _read(os.path.join(d, "cpu.cfs_period_us"))
        if q and p:
            return _ratio(q, p)
    return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None  # "max": no quota
    return q / p if q > 0 and p > 0 else None
