"""Sweeps (fadiag.run.sweep): --jobs N gives the bytes of --jobs 1, --resume skips what a killed sweep finished,
the Dask backend on a 2-worker LocalCluster on loopback, and exit 2 with the install hint without it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fadiag.run import sweep

from conftest import EXAMPLES

REPO = Path(__file__).resolve().parents[2]
RESMLP = sorted(str(p) for p in EXAMPLES.glob("resmlp_*.pt"))


def _audit(run_cli, paths, *extra):
    return run_cli(["audit", *paths, "-f", "jsonl", *extra])


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """--jobs 1 output of the four shipped ResMLP checkpoints (subprocess: the real entry point)."""
    res = subprocess.run([sys.executable, "-m", "fadiag", "audit", *RESMLP, "-f", "jsonl", "-q"],
                         capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 1 and len(res.stdout.splitlines()) == len(RESMLP), res.stderr
    return res.stdout


def test_jobs_2_is_byte_identical(serial, run_cli):
    code, out, errtext = _audit(run_cli, RESMLP, "-q", "--jobs", "2")
    assert code == 1, errtext
    assert out == serial
    assert [json.loads(l)["checkpoint"]["path"] for l in out.splitlines()] == \
        [json.loads(l)["checkpoint"]["path"] for l in serial.splitlines()]
    for line in serial.splitlines():
        assert json.loads(line)["runtime"] == {"threads": 1}


def test_resume_skips_finished_and_keeps_bytes(serial, run_cli, tmp_path, monkeypatch):
    journal = tmp_path / "sweep.jsonl"
    code, out, _ = _audit(run_cli, RESMLP[:2], "-q", "--resume", journal)
    assert out.splitlines() == serial.splitlines()[:2]
    lines = journal.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(l)["sweep"]["sha256"] for l in lines)
    calls = []
    import fadiag.families.audit as audit_family

    real = audit_family._audit  # the audit family's body (its record: fadiag.registry)
    monkeypatch.setattr(audit_family, "_audit", lambda p, o, *a: calls.append(p) or real(p, o, *a))
    code, out, errtext = _audit(run_cli, RESMLP, "--resume", journal)
    assert out == serial
    assert calls == RESMLP[2:]
    assert errtext.count("skipped") == 2
    assert len(journal.read_text().splitlines()) == 4
    # other settings: nothing is skipped
    calls.clear()
    _audit(run_cli, RESMLP[:1], "-q", "--resume", journal, "--batches", "3")
    assert calls == RESMLP[:1]


def test_resume_journal_torn_last_line_and_garbage(serial, run_cli, tmp_path):
    journal = tmp_path / "j.jsonl"
    _audit(run_cli, RESMLP[:1], "-q", "--resume", journal)
    with open(journal, "a") as f:
        f.write('{"schema": "fadiag.au')  # killed mid-write
    code, out, _ = _audit(run_cli, RESMLP[:1], "-q", "--resume", journal)
    assert out.splitlines() == serial.splitlines()[:1]
    journal.write_text("not json\n" + journal.read_text() + "\n")
    code, _, errtext = _audit(run_cli, RESMLP[:1], "-q", "--resume", journal)
    assert code == 2 and "line 1" in errtext
    code, _, errtext = _audit(run_cli, RESMLP[:1], "-q", "--resume", RESMLP[0])
    assert code == 2 and "refusing" in errtext


def test_killed_sweep_resumes_without_redoing(serial, tmp_path):
    """SIGKILL a sweep once its journal has a report; the rerun redoes only what was not journalled."""
    ckpts = RESMLP
    journal = tmp_path / "j.jsonl"
    cmd = [sys.executable, "-m", "fadiag", "audit", *ckpts, "-f", "jsonl", "-q", "--resume", str(journal)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    done = [json.loads(l)["sweep"]["path"] for l in journal.read_text().splitlines() if l.endswith("}")]
    assert done, proc.stderr.read()
    assert len(done) < len(ckpts), "the sweep finished before it was killed"
    res = subprocess.run(cmd[:-3] + ["--resume", str(journal)], capture_output=True, text=True, cwd=REPO, env=env)
    skipped = [l.split(": ")[1] for l in res.stderr.splitlines() if l.endswith("skipped")]
    assert skipped == [p for p in ckpts if p in done]
    assert len(res.stdout.splitlines()) == len(ckpts)
    assert [json.loads(l)["verdict"] for l in res.stdout.splitlines()] == \
        [json.loads(l)["verdict"] for l in serial.splitlines()]


def test_failure_is_the_same_with_jobs(run_cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    paths = [RESMLP[0], str(bad), RESMLP[1]]
    c1, o1, e1 = _audit(run_cli, paths, "-q")
    c2, o2, e2 = _audit(run_cli, paths, "-q", "--jobs", "2")
    assert c1 == c2 == 2
    assert e1.strip().splitlines()[-1] == e2.strip().splitlines()[-1]
    assert e1.strip().splitlines()[-1].startswith("fadiag: error:")


@pytest.mark.parametrize("kind, path, opts", [
    ("relevance", EXAMPLES / "multihead" / "multihead.pt", {}),
    pytest.param("edges", EXAMPLES / "gsnn" / "gsnn.pt", {"truth": str(EXAMPLES / "gsnn" / "gsnn_truth.tsv")},
                 marks=pytest.mark.slow),
    pytest.param("credit", RESMLP[0], {"n_dirs": 4}, marks=pytest.mark.slow),
])
def test_api_sweep_other_commands(kind, path, opts):
    one = sweep.run_sweep(kind, [path, path], opts, jobs=1)
    two = sweep.run_sweep(kind, [path, path], opts, jobs=2)
    assert json.dumps(one) == json.dumps(two)
    assert one[0]["schema"].startswith(f"fadiag.{kind}/") and one[0]["runtime"]["threads"] == 1


def test_dask_local_cluster(serial):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, protocol="tcp") as cluster:
        with distributed.Client(cluster) as client:
            reps = sweep.run_sweep("audit", RESMLP, {"quiet": True}, scheduler=client)
        addr = cluster.scheduler_address
        assert addr.startswith("tcp://127.0.0.1:")
        res = subprocess.run([sys.executable, "-m", "fadiag", "audit", *RESMLP, "-f", "jsonl", "-q"],
                             capture_output=True, text=True, cwd=REPO,
                             env=dict(os.environ, OMP_NUM_THREADS="1", FADIAG_SCHEDULER=addr))
    assert [json.loads(l) | {"settings": None} for l in serial.splitlines()] == \
        [r | {"settings": None} for r in reps]
    assert res.stdout == serial, res.stderr


def test_scheduler_without_the_extra_is_exit_2():
    code = ("import sys; sys.modules['distributed'] = None\n"
            "from fadiag.cli import main\n"
            f"main(['audit', {RESMLP[0]!r}, '--scheduler', 'tcp://127.0.0.1:8786'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ['fadiag: error: --scheduler: ' + sweep.DASK_HINT]
    assert res.stdout == ""
