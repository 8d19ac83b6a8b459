"""Trust comes only from the command line; outputs never land on inputs; resume never mixes files.

Attacks as a pull-request checkout would stage them (files placed where fadiag finds them): a project config
or an environment variable granting trust, a config naming a spec that imports code of the checkout, outputs
naming a file the run reads (through the spec, the folder, a symlink or a hard link), identical checkpoint
copies and a torn journal. Every payload would create ``MARKER`` in the working directory if it ever ran.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from _payloads import RunsShellOnLoad
from conftest import REPO

BASE = REPO / "tests" / "corpus" / "base"
MARKER = "MARKER"
ENV = ("FADIAG_SPEC", "FADIAG_TRUST_CHECKPOINT", "FADIAG_TRUST_CODE", "FADIAG_SCHEDULER", "FADIAG_FORMAT",
       "FADIAG_BATCHES", "FADIAG_DATA")


def run_main(argv, capsys):
    from fadiag.cli import main

    with pytest.raises(SystemExit) as ei:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    return ei.value.code, out.out, out.err


def one_line_exit_2(code, out, err, *needles):
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, err)
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


@pytest.fixture
def proj(tmp_path, monkeypatch):
    """tiny.pt + tiny.yaml + tiny_data.npz, a pickle payload evil.pt, and evil.py / evil.yaml (a spec whose
    model.arch imports evil.py, which writes MARKER and then provides the tiny ResMLP)."""
    for f in BASE.iterdir():
        shutil.copy(f, tmp_path / f.name)
    torch.save({"model": RunsShellOnLoad(f"touch {MARKER}")}, tmp_path / "evil.pt")
    (tmp_path / "evil.py").write_text(f"open({MARKER!r}, 'w').close()\nfrom fadiag.models.resmlp import ResMLP\n")
    spec = (tmp_path / "tiny.yaml").read_text().replace("arch: resmlp", "arch: evil:ResMLP")
    assert "evil:ResMLP" in spec
    (tmp_path / "evil.yaml").write_text(spec)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # were the gate open, "evil" would import from here
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    import sys

    sys.modules.pop("evil", None)


# ------------------------------------------------------------------------------ trust: command line only

@pytest.mark.parametrize("name,text,flag", [
    ("pyproject.toml", "[tool.fadiag]\ntrust-checkpoint = true\n", "--trust-checkpoint"),
    ("fadiag.yaml", "trust_checkpoint: true\n", "--trust-checkpoint"),
    (".fadiag.yaml", "audit:\n  trust-code: true\n", "--trust-code"),
    ("fadiag.yaml", "audit:\n  scheduler: tcp://203.0.113.1:8786\n", "--scheduler"),
])
def test_a_config_file_never_grants_trust(proj, capsys, name, text, flag):
    (proj / name).write_text(text)
    one_line_exit_2(*run_main(["audit", "evil.pt", "--spec", "tiny.yaml"], capsys), flag, "command line", name)
    assert not (proj / MARKER).exists()


@pytest.mark.parametrize("var,flag", [("FADIAG_TRUST_CHECKPOINT", "--trust-checkpoint"),
                                      ("FADIAG_TRUST_CODE", "--trust-code")])
def test_an_environment_variable_never_grants_trust(proj, capsys, monkeypatch, var, flag):
    monkeypatch.setenv(var, "1")
    one_line_exit_2(*run_main(["audit", "evil.pt", "--spec", "tiny.yaml"], capsys), var, flag)
    assert not (proj / MARKER).exists()


def test_a_spec_reached_through_the_config_or_env_is_discovered(proj, capsys, monkeypatch):
    """`fadiag audit` with no arguments in a checkout whose fadiag.yaml names evil.yaml: nothing is imported
    without --trust-code on the command line; with it (the user's word), the class is imported."""
    (proj / "fadiag.yaml").write_text("spec: evil.yaml\naudit:\n  checkpoints: [tiny.pt]\n")
    one_line_exit_2(*run_main(["audit"], capsys), "evil", "--trust-code", "project config")
    assert not (proj / MARKER).exists()
    (proj / "fadiag.yaml").unlink()
    monkeypatch.setenv("FADIAG_SPEC", "evil.yaml")
    one_line_exit_2(*run_main(["audit", "tiny.pt"], capsys), "--trust-code", "FADIAG_SPEC")
    assert not (proj / MARKER).exists()
    code, out, err = run_main(["audit", "tiny.pt", "--trust-code", "-f", "json", "-q"], capsys)
    assert code in (0, 1), err
    assert json.loads(out)["checkpoint"]["trusted_code"] is True and (proj / MARKER).exists()


# ------------------------------------------------------------------------------ outputs never land on inputs

def _hf_folder(proj):
    from safetensors.torch import save_file

    f = proj / "hf"
    f.mkdir()
    (f / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "n_embd": 8}))
    save_file({"w": torch.zeros(2)}, str(f / "model.safetensors"))
    return f


#: (command line, output option, the input it names): each output names a file the run would read
OUTPUT_CASES = [
    (["audit", "tiny.pt"], "--output", "tiny.yaml"),                             # the sidecar spec
    (["audit", "tiny.pt"], "--output", "tiny_data.npz"),                         # data.path of the sidecar
    (["relevance", "tiny.pt", "--spec", "tiny.yaml"], "--output", "tiny_data.npz"),  # ... of the given spec
    (["credit", "tiny.pt", "--spec", "credit.yaml"], "--output", "init.pt"),     # credit.init_checkpoint
    (["edges", "tiny.pt", "--spec", "edges.yaml"], "--matrix", "truth.npy"),     # edges.truth
    (["edges", "tiny.pt", "--spec", "edges.yaml"], "--edges", "truth.npy"),
    (["audit", "tiny.pt"], "--plot", "plot.png"),                                # a symlink to the sidecar
    (["edges", "tiny.pt"], "--plot", "plot.png"),
    (["audit", "hf", "--data", "tiny_data.npz"], "--output", "hf/config.json"),  # a file of the folder
    (["audit", "hf", "--data", "tiny_data.npz"], "--output", "hf/model.safetensors"),
    (["audit", "tiny.pt"], "--output", "hard.json"),                             # a hard link to the data
]


@pytest.mark.parametrize("args,option,target", OUTPUT_CASES)
def test_no_output_lands_on_an_input(proj, run_cli, args, option, target):
    import numpy as np
    import yaml

    spec = yaml.safe_load((proj / "tiny.yaml").read_text())
    shutil.copy(proj / "tiny.pt", proj / "init.pt")
    (proj / "credit.yaml").write_text(yaml.safe_dump({**spec, "credit": {"init_checkpoint": "init.pt"}}))
    np.save(proj / "truth.npy", np.zeros((3, 3)))
    (proj / "edges.yaml").write_text(yaml.safe_dump({**spec, "edges": {"truth": "truth.npy"}}))
    _hf_folder(proj)
    os.symlink("tiny.yaml", proj / "plot.png")
    os.link(proj / "tiny_data.npz", proj / "hard.json")
    before = (proj / target).read_bytes()
    code, out, err = run_cli([*args, option, target])
    one_line_exit_2(code, out, err, "is also an input of this run", option)
    assert (proj / target).read_bytes() == before


# ------------------------------------------------------------------------------ resume never mixes files

def _sidecars(proj, **names):
    import yaml

    spec = yaml.safe_load((proj / "tiny.yaml").read_text())
    for stem, method in names.items():
        shutil.copy(proj / "tiny.pt", proj / f"{stem}.pt")
        (proj / f"{stem}.yaml").write_text(yaml.safe_dump({**spec, "audit": {"method_name": method}}))


def _report(run_cli, path, *extra):
    code, out, err = run_cli(["audit", path, "-f", "jsonl", "--resume", "j.jsonl", *extra])
    assert code in (0, 1), err
    return json.loads(out), err


def test_identical_copies_are_separate_journal_entries(proj, run_cli):
    """a.pt and b.pt hold the same bytes, each with its own sidecar: b.pt's report is b.pt's, never a.pt's."""
    _sidecars(proj, a="A", b="B")
    rep, _ = _report(run_cli, "a.pt")
    assert rep["checkpoint"]["path"] == "a.pt" and rep["method_name"] == "A"
    rep, err = _report(run_cli, "b.pt")
    assert rep["checkpoint"]["path"] == "b.pt" and rep["method_name"] == "B" and "skipped" not in err
    rep, err = _report(run_cli, "a.pt")
    assert rep["method_name"] == "A" and "skipped" in err
    (proj / "a.yaml").write_text((proj / "a.yaml").read_text().replace("method_name: A", "method_name: C"))
    rep, err = _report(run_cli, "a.pt")  # the sidecar changed: not the same input any more
    assert rep["method_name"] == "C" and "skipped" not in err
    lines = (proj / "j.jsonl").read_text().splitlines()
    assert [json.loads(l)["sweep"]["resolved"] for l in lines] == [str(proj / p) for p in ("a.pt", "b.pt", "a.pt")]


def test_a_torn_last_line_is_dropped_never_appended_to(proj, run_cli):
    _sidecars(proj, a="A", b="B")
    _report(run_cli, "a.pt")
    with open("j.jsonl", "a") as f:
        f.write('{"schema": "fadiag.audit/1", "meth')  # a sweep killed mid-write
    rep, err = _report(run_cli, "b.pt")
    assert "torn" in err and rep["method_name"] == "B"
    text = (proj / "j.jsonl").read_text()
    assert text.endswith("\n") and [json.loads(l)["method_name"] for l in text.splitlines()] == ["A", "B"]
    code, out, err = run_cli(["audit", "a.pt", "b.pt", "-f", "jsonl", "--resume", "j.jsonl"])
    assert code in (0, 1) and err.count("skipped") == 2, err  # the run after that reads the journal


WORKER = """
import multiprocessing as mp, sys, time
def work():
    from fadiag.run.workers import watch_parent
    watch_parent()
    time.sleep(600)
if __name__ == "__main__":
    p = mp.get_context(sys.argv[1]).Process(target=work)
    p.start()
    print(p.pid, flush=True)
    time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not reaped (its parent is dead)
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("method,sig", [("forkserver", "SIGKILL"), ("spawn", "SIGTERM"), ("fork", "SIGKILL")])
def test_a_worker_never_outlives_its_sweep(tmp_path, method, sig):
    """The sweep (here a stand-in starting one worker) is killed; its worker, asleep for 10 minutes, is gone
    within seconds. The deadline only stops a test that would otherwise wait the 10 minutes."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "w.py").write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.Popen([sys.executable, str(tmp_path / "w.py"), method], stdout=subprocess.PIPE, text=True,
                         env=env, cwd=tmp_path)
    try:
        child = int(p.stdout.readline())
        time.sleep(0.5)
        assert not _gone(child)
        p.send_signal(getattr(signal, sig))
        p.wait(timeout=60)
        deadline = time.monotonic() + 60
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(child)
    finally:
        p.kill()
        p.wait()


def _descendants(pid: int) -> list:
    kids: dict = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killing_a_jobs_2_sweep_leaves_no_worker(tmp_path, sig):
    """The real sweep: `fadiag audit --jobs 2` training frozen baselines (minutes of work) is killed once its
    workers are busy; none of its processes is left running."""
    import signal
    import subprocess
    import sys
    import time

    ckpts = sorted(str(p) for p in (REPO / "checkpoints_example").glob("resmlp_*.pt")) * 2
    p = subprocess.Popen([sys.executable, "-m", "fadiag", "audit", *ckpts, "--jobs", "2", "-q", "-f", "jsonl",
                          "--frozen-baseline", "train"], cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 120
        while len(_descendants(p.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # the workers are inside a checkpoint now
        kids = _descendants(p.pid)
        assert len(kids) >= 3 and p.poll() is None
        p.send_signal(getattr(signal, sig))
        p.wait(timeout=60)
        deadline = time.monotonic() + 60
        while not all(_gone(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(k) for k in kids)
    finally:
        p.kill()
        p.wait()
