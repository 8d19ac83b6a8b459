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
