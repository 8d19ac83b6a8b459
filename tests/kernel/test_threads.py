"""The default thread count (docs/scale.md, "Threads"): the cores the process may use (affinity capped by a
cgroup quota) for a model whose batch pass is large, one thread otherwise; --threads and OMP_NUM_THREADS win;
the choice is recorded under ``runtime``. The multiply-add count it reads is checked against a hand count."""

from __future__ import annotations

import pytest
import torch

from conftest import EXAMPLES
from fadiag.run import sweep, threads
from fadiag.subject import _count_macs

RESMLP = sorted(str(p) for p in EXAMPLES.glob("resmlp_*.pt"))


@pytest.mark.parametrize("files, want", [
    ({"cpu.max": "200000 100000"}, 2.0),
    ({"cpu.max": "max 100000"}, None),
    ({"cpu/cpu.cfs_quota_us": "150000", "cpu/cpu.cfs_period_us": "100000"}, 1.5),
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    ({}, None),
])
def test_cgroup_quota(tmp_path, files, want):
    proc = tmp_path / "cgroup"
    proc.write_text("4:cpu,cpuacct:/\n0::/\n")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    assert threads.cgroup_cpu_limit(str(tmp_path), str(proc)) == want


def test_cpu_count_is_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    assert threads.cpu_count() == 3
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.cpu_count() == 4


def test_choose_threads_order(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(sweep, "cpu_count", lambda: 7)
    big, small = sweep.LARGE_MODEL_MACS, sweep.LARGE_MODEL_MACS - 1
    assert sweep.choose_threads(None, macs=big) == 7
    assert sweep.choose_threads(None, macs=small) == 1
    assert sweep.choose_threads(3, macs=big) == 3  # --threads wins
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert sweep.choose_threads(None, macs=big) == 2  # then OMP_NUM_THREADS


def test_multiply_adds_are_counted_from_shapes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 5 * 5, 6))
    emb = torch.nn.Embedding(100, 8)
    acc = [0]
    handles = _count_macs(model, acc) + _count_macs(emb, acc)
    model(torch.randn(2, 3, 5, 5))
    emb(torch.zeros(2, 7, dtype=torch.long))  # a lookup: no multiply-adds
    for h in handles:
        h.remove()
    conv = 2 * 5 * 5 * 4 * (3 * 3 * 3)  # output positions x out channels x (in channels x kernel)
    lin = 2 * 6 * 100
    assert acc[0] == conv + lin


@pytest.mark.parametrize("threshold, requested, want", [(1, None, 2), (1 << 62, None, 1), (1, 1, 1)])
def test_audit_records_the_threads_it_chose(monkeypatch, threshold, requested, want):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(sweep, "cpu_count", lambda: 2)
    monkeypatch.setattr(sweep, "LARGE_MODEL_MACS", threshold)
    try:
        rep, _ = sweep.one("audit", RESMLP[0], {"threads": requested, "quiet": True})
        assert rep.runtime == {"threads": want}
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(1)
