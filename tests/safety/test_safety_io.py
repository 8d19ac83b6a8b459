"""Output integrity and resource bounds.

--output (DESIGN.md: "writes atomically (temp file + rename), never a partial file"): when a run fails
(bad threshold, bad spec, a failing or hostile checkpoint among several, the write itself failing or
being interrupted) the pre-existing file keeps its bytes and no ``.<name>.*.tmp`` is left behind; on
success the file is replaced by rename (a new inode), never rewritten in place. SIGINT/SIGTERM sent to a
real ``python -m fadiag audit --output`` while torch imports or the audit runs leave the output absent (or
the previous file) and never a partial one, no temp file, and a non-zero exit.

Resource bounds: absurd sizes (data.batches / --batches / --batch-size 10**9, --n-dirs, model args such as
width 10**9, synthetic n_samples 10**12) are refused up front with the limit named (exit 2) within a few
seconds. They run under an address-space cap and an alarm (or in a capped, timed process), so that a
missing guard fails the test fast instead of exhausting the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _budget import HANG_GUARD_S, CPUBudgetExceeded, cpu_budget, run_capped, wait_for_cpu

from _payloads import RunsShellOnLoad
from conftest import EXAMPLES

PREVIOUS = "PREVIOUS CONTENT, must survive a failed run\n"


def temp_files(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


@pytest.fixture
def out_file(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    p = folder / "report.json"
    p.write_text(PREVIOUS)
    return p


def _untouched(p: Path, ino: int) -> None:
    assert p.read_text() == PREVIOUS
    assert p.stat().st_ino == ino
    assert temp_files(p.parent) == [], temp_files(p.parent)
    assert sorted(x.name for x in p.parent.iterdir()) == [p.name]


# ----------------------------------------------------------------------------------- failing runs

def _bad_runs(files, tmp_path):
    bad_ckpt = tmp_path / "broken.pt"
    bad_ckpt.write_bytes(files.ckpt.read_bytes()[:100])
    evil = tmp_path / "evil.pt"
    torch.save({"model": files.state_dict, "x": RunsShellOnLoad(f"touch {tmp_path / 'MARKER'}")}, evil)
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("model: {arch: resmlp, args: {in_dim: 8}}\ndata: {batches: x}\n")
    return {
        "bad_threshold": ["audit", files.ckpt, "-t", "g_norm_floor=nan"],
        "threshold_not_a_number": ["audit", files.ckpt, "-t", "g_norm_floor=abc"],
        "bad_spec": ["audit", files.ckpt, "--spec", bad_spec],
        "second_of_two_broken": ["audit", files.ckpt, bad_ckpt],
        "second_of_three_hostile": ["audit", files.ckpt, evil, files.ckpt],
        "bad_data": ["audit", files.ckpt, "--data", bad_ckpt],
        "credit_bad_threshold": ["credit", files.ckpt, "-t", "rho_deep_floor=inf"],
        "relevance_wrong_arch": ["relevance", files.ckpt],
        "inspect_missing": ["inspect", tmp_path / "nope.pt"],
    }


@pytest.mark.parametrize("fmt", ["json", "jsonl", "markdown"])
def test_failed_run_leaves_output_untouched(run_cli, tiny_resmlp_ckpt, tmp_path, out_file, fmt):
    files = tiny_resmlp_ckpt()
    ino = out_file.stat().st_ino
    for name, args in _bad_runs(files, tmp_path).items():
        code, out, err = run_cli([*args, "-f", fmt, "-o", out_file])
        assert code == 2, (name, err)
        lines = err.strip().splitlines()  # earlier checkpoints' verdict lines may precede the one error line
        assert "Traceback" not in err and [l for l in lines if "error" in l] == lines[-1:], (name, err)
        _untouched(out_file, ino)
    assert not (tmp_path / "MARKER").exists()


def test_failed_run_creates_no_output(run_cli, tiny_resmlp_ckpt, tmp_path):
    files = tiny_resmlp_ckpt()
    folder = tmp_path / "empty"
    folder.mkdir()
    for name, args in _bad_runs(files, tmp_path).items():
        code, _, err = run_cli([*args, "-f", "json", "-o", folder / "r.json"])
        assert code == 2, (name, err)
        assert list(folder.iterdir()) == [], name


def test_success_replaces_atomically(run_cli, tiny_resmlp_ckpt, out_file):
    files = tiny_resmlp_ckpt()
    old_ino = out_file.stat().st_ino
    keep = out_file.parent.parent / "hardlink_to_old.json"
    os.link(out_file, keep)  # a rename leaves the other link on the old bytes; an in-place write would not
    code, out, err = run_cli(["audit", files.ckpt, "-f", "json", "-o", out_file])
    assert code == 0, err
    assert out == "" and f"wrote json report to {out_file}" in err
    rep = json.loads(out_file.read_text())
    assert rep["schema"] == "fadiag.audit/1"
    assert out_file.stat().st_ino != old_ino and keep.read_text() == PREVIOUS
    assert temp_files(out_file.parent) == []
    _, stdout_json, _ = run_cli(["audit", files.ckpt, "-f", "json"])
    assert out_file.read_text() == stdout_json  # the file holds exactly what stdout would have


def test_output_into_missing_folder_is_bad_input(run_cli, tiny_resmlp_ckpt, tmp_path):
    files = tiny_resmlp_ckpt()
    target = tmp_path / "no" / "such" / "r.json"
    code, out, err = run_cli(["audit", files.ckpt, "-f", "json", "-q", "-o", target])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and str(target) in err
    assert not (tmp_path / "no").exists()


def test_output_is_a_directory(run_cli, tiny_resmlp_ckpt, tmp_path):
    files = tiny_resmlp_ckpt()
    d = tmp_path / "adir"
    d.mkdir()
    code, _, err = run_cli(["audit", files.ckpt, "-f", "json", "-o", d])
    assert temp_files(tmp_path) == [] and list(d.iterdir()) == []
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("where, exc", [("fsync", OSError(28, "No space left on device")),
                                        ("replace", OSError(13, "Permission denied")),
                                        ("replace", KeyboardInterrupt())])
def test_write_failure_leaves_old_file_and_no_temp(run_cli, tiny_resmlp_ckpt, out_file, monkeypatch, where, exc):
    """The write itself fails after the temp file holds (part of) the report: old bytes stay, temp removed."""
    files = tiny_resmlp_ckpt()
    ino = out_file.stat().st_ino
    seen = []

    def boom(*a, **k):
        seen.append(a)
        raise exc

    monkeypatch.setattr(os, where, boom)
    code, out, err = run_cli(["audit", files.ckpt, "-f", "json", "-o", out_file])
    monkeypatch.undo()
    assert seen, "the failure was never injected"
    assert code != 0 and "Traceback" not in err
    if isinstance(exc, KeyboardInterrupt):
        assert code == 130
    _untouched(out_file, ino)


# ------------------------------------------------------------------------------- real signals

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_never_leaves_partial_output(tmp_path, sig):
    """Signal a real audit (both examples, each with --frozen-baseline train: ~10 CPU seconds) while torch
    imports (after 0.3 CPU seconds; importing torch takes ~1.5) and while it computes (after 4 CPU seconds);
    one run writes a fresh file, the other replaces one. The moments are the child's own CPU time, so a
    loaded machine signals at the same point of the work as an idle one."""
    runs = []
    for cpu_at, previous in ((0.3, False), (4.0, True)):
        folder = tmp_path / f"d{cpu_at}"
        folder.mkdir()
        out = folder / "report.json"
        if previous:
            out.write_text(PREVIOUS)
        p = subprocess.Popen([sys.executable, "-m", "fadiag", "audit", str(EXAMPLES / "resmlp_bp.pt"),
                              str(EXAMPLES / "resmlp_dfa.pt"), "--frozen-baseline", "train", "-f", "json",
                              "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert wait_for_cpu(p, cpu_at), "finished before the signal: the test no longer interrupts anything"
        p.send_signal(sig)
        runs.append((cpu_at, previous, out, p))
    for cpu_at, previous, out, p in runs:
        _, err = p.communicate(timeout=HANG_GUARD_S)
        assert p.returncode != 0, (cpu_at, err)
        if sig == signal.SIGINT:  # 130, or killed by SIGINT itself after reporting (the shell convention)
            assert p.returncode in (130, -signal.SIGINT) or "KeyboardInterrupt" in err, (p.returncode, err)
        assert temp_files(out.parent) == [], (cpu_at, temp_files(out.parent))
        if out.exists():
            text = out.read_text()
            if text != PREVIOUS:  # never partial: either the old bytes or a complete report
                assert json.loads(text)["schema"] == "fadiag.audit/1"
        assert sorted(x.name for x in out.parent.iterdir()) in ([], ["report.json"])


# ------------------------------------------------------------------------------------ resource bounds

def _vmsize() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0  # pragma: no cover - not Linux


@contextlib.contextmanager
def bounded(cpu_seconds: float = 5.0, extra_bytes: int = 3 * 1024**3):
    """At most ``extra_bytes`` more address space and ``cpu_seconds`` of CPU time for the block (a refusal
    up front costs well under a CPU second; a missing guard allocates or loops far past both)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vmsize() + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        with cpu_budget(cpu_seconds):
            yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def refused_fast(run_cli, args, *needles, cpu_seconds: float = 5.0) -> str:
    try:
        with bounded(cpu_seconds):
            code, out, err = run_cli(args)
    except CPUBudgetExceeded:
        pytest.fail(f"still running after {cpu_seconds} CPU seconds: no up-front guard")
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and "Traceback" not in err, err
    _has(lines[0], needles)
    return lines[0]


def _has(line: str, needles) -> None:
    """Each needle must occur in ``line``; a tuple needle means any one of its strings."""
    for n in needles:
        assert any(x in line for x in (n if isinstance(n, tuple) else (n,))), (n, line)


def _spec_with(files, tmp_path, **sections) -> Path:
    s = json.loads(json.dumps(files.spec_dict))
    for sec, kv in sections.items():
        s.setdefault(sec, {}).update(kv)
    p = tmp_path / "big.yaml"
    p.write_text(yaml.safe_dump(s))
    return p


@pytest.mark.parametrize("cmd, extra, needles", [
    ("audit", ["--batches", str(10**9)], ["--batches", "limit"]),
    ("audit", ["--batch-size", str(10**9)], ["--batch-size", "limit"]),
    ("audit", ["--batches", str(10**5), "--batch-size", str(10**5)], ["limit"]),
    ("credit", ["--batch-size", str(10**9)], ["--batch-size", "limit"]),
    ("credit", ["--n-dirs", str(10**9)], ["--n-dirs", "4096"]),
    ("credit", ["--toy-lq", "--toy-d", str(10**9)], ["--toy-d"]),
    ("credit", ["--toy-lq", "--toy-depth", str(10**9)], ["--toy-depth"]),
])
def test_absurd_flags_are_refused_up_front(run_cli, tiny_resmlp_ckpt, cmd, extra, needles):
    files = tiny_resmlp_ckpt()
    refused_fast(run_cli, [cmd, files.ckpt, "-f", "json", *extra], *needles)


@pytest.mark.parametrize("data", [{"batches": 10**9}, {"batch_size": 10**9}, {"batches": 10**5, "batch_size": 10**5}])
def test_absurd_spec_data_sizes_are_refused_up_front(run_cli, tiny_resmlp_ckpt, tmp_path, data):
    files = tiny_resmlp_ckpt()
    spec = _spec_with(files, tmp_path, data=data)
    for cmd in ("audit", "credit"):
        refused_fast(run_cli, [cmd, files.ckpt, "--spec", spec, "-f", "json"], str(spec), "data", "limit")


ABSURD_SPEC_SIZES = {
    "width": ({"model": {"args": {"in_dim": 8, "width": 10**9, "depth": 3, "n_classes": 3}}}, "model.args.width"),
    "hidden_mult": ({"model": {"args": {"in_dim": 8, "width": 8, "depth": 3, "n_classes": 3,
                                        "hidden_mult": 10**9}}}, "model.args.hidden_mult"),
    "depth": ({"model": {"args": {"in_dim": 8, "width": 8, "depth": 10**9, "n_classes": 3}}}, "model.args.depth"),
    "synthetic_n_samples": ({"data": {"source": "synthetic", "n_samples": 10**12}}, "data.n_samples"),
}


LIMIT_WORDS = ("limit", "must be in")  # "over the limit of 10,000" / "must be in 1..10,000,000"


def refused_fast_in_a_process(args, *needles, cpu_seconds: float = 20.0, cwd=None) -> str:
    """The same check in a fresh interpreter (4 GiB address-space cap, killed by the kernel past
    ``cpu_seconds`` of CPU, interpreter start and the torch import included, ~2 s): an alarm in-process is
    not reliable against a long pure-Python loop (it can land in a finalizer, where it is swallowed)."""
    r, used = run_capped(args, cpu_seconds=cpu_seconds, as_bytes=4 * 1024**3, cwd=cwd)
    if r.returncode == -signal.SIGXCPU or r.returncode == -signal.SIGKILL:
        pytest.fail(f"still running after {cpu_seconds} CPU seconds: no up-front guard")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and r.stdout == "" and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert used < cpu_seconds
    _has(lines[0], needles)
    return lines[0]


@pytest.mark.parametrize("case", list(ABSURD_SPEC_SIZES))
def test_absurd_model_and_sample_sizes_are_refused_up_front(run_cli, tiny_resmlp_ckpt, tmp_path, case):
    files = tiny_resmlp_ckpt()
    sections, key = ABSURD_SPEC_SIZES[case]
    s = json.loads(json.dumps(files.spec_dict))
    for sec, kv in sections.items():
        s[sec] = {**s.get(sec, {}), **kv}
        if sec == "data":
            s[sec].pop("path", None)
    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump(s))
    args = ["audit", files.ckpt, "--spec", spec, "-f", "json"]
    if case == "depth":  # a pure-Python loop over 10**9 blocks: only a separate process can be stopped reliably
        refused_fast_in_a_process(args, key, LIMIT_WORDS, cwd=tmp_path)
    else:  # allocation-bound: without a guard the in-process address-space cap makes these fail at once
        refused_fast(run_cli, args, key, LIMIT_WORDS)


def test_process_harness_control(tiny_resmlp_ckpt, tmp_path):
    """The capped, timed process used above passes a case guarded in the spec: the harness itself fits the caps."""
    files = tiny_resmlp_ckpt()
    spec = _spec_with(files, tmp_path, data={"batches": 10**9})
    refused_fast_in_a_process(["audit", files.ckpt, "--spec", spec, "-f", "json"], str(spec), "limit", cwd=tmp_path)


def test_output_file_mode_follows_umask_or_the_replaced_file(run_cli, tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the final file must not be left private by accident."""
    import stat

    old = os.umask(0o022)
    try:
        out = tmp_path / "r.json"
        code, _, err = run_cli(["audit", EXAMPLES / "resmlp_bp.pt", "-q", "-f", "json", "-o", out])
        assert code == 0, err
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        out.chmod(0o640)
        run_cli(["audit", EXAMPLES / "resmlp_bp.pt", "-q", "-f", "json", "-o", out])
        assert stat.S_IMODE(out.stat().st_mode) == 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize("extra, needle", [
    (["-o", "{ck}"], "is also an input"),
    (["-o", "{tmp}/a.json", "--plot", "{tmp}/a.json"], "is also the --output file"),
    (["-o", ""], "empty path"),
])
def test_outputs_never_overwrite_inputs_or_each_other(run_cli, tmp_path, extra, needle):
    import shutil

    ck = tmp_path / "bp.pt"
    shutil.copy(EXAMPLES / "resmlp_bp.pt", ck)
    shutil.copy(EXAMPLES / "resmlp_bp.yaml", tmp_path / "bp.yaml")
    (tmp_path / "bp.yaml").write_text((tmp_path / "bp.yaml").read_text().replace(
        "mnist1d_", str(EXAMPLES) + "/mnist1d_"))
    before = ck.read_bytes()
    args = [a.format(ck=ck, tmp=tmp_path) for a in extra]
    code, out, err = run_cli(["audit", ck, *args])
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert ck.read_bytes() == before


def test_output_to_a_fifo_is_refused(run_cli, tmp_path):
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    code, out, err = run_cli(["audit", EXAMPLES / "resmlp_bp.pt", "-o", fifo])
    assert code == 2 and "not a regular file" in err


def test_float64_data_is_accepted(run_cli, tmp_path):
    import numpy as np

    z = np.load(EXAMPLES / "mnist1d_test.npz")
    np.savez(tmp_path / "d64.npz", x=z["x"].astype("float64"), y=z["y"])
    code, out, err = run_cli(["audit", EXAMPLES / "resmlp_bp.pt", "--data", tmp_path / "d64.npz", "-q", "-f", "json"])
    assert code == 0, err
    assert json.loads(out)["verdict"] == "trustworthy"


@pytest.mark.parametrize("text, needle", [
    ('{"schema": "fadiag.audit/1", "flags": [], "verdict": "x", "v": NaN}', "NaN"),
    ('{"schema": "fadiag.audit/1", "flags": "x", "verdict": "x"}', "malformed report"),
    ('{"schema": "fadiag.audit/99", "flags": [], "verdict": "x"}', "unknown report schema"),
])
def test_report_rejects_malformed_saved_reports(run_cli, tmp_path, text, needle):
    p = tmp_path / "r.json"
    p.write_text(text)
    code, out, err = run_cli(["report", p, "-f", "json"])
    assert code == 2 and needle in err and out == ""
