"""Every command in every format: the exit code follows the flags, and each format's structure holds
(JSON against the documented keys, JSONL one object a line, JUnit parsed with failures = flagged flags,
GitHub lines escaped and parseable, markdown sections, table non-empty). Golden files pin the shipped
examples' JSON for credit, edges and relevance at float32 tolerance (``FADIAG_REGEN_GOLDEN=1`` rewrites them)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from _tol import assert_tree_close
from conftest import REPO

from fadiag.render import Format
from fadiag.reports import from_dict

#: command -> (argv after the command name, keys every report of that command carries)
COMMON = {"schema", "fadiag_version", "flags", "verdict"}
COMMANDS = {
    "audit": (["checkpoints_example/resmlp_dfa.pt"], COMMON | {"residual_norms", "bp_grad_norms", "checkpoint"}),
    "credit": (["checkpoints_example/resmlp_dfa.pt"],
               COMMON | {"layers", "means", "signal", "not_available", "params", "checkpoint", "data"}),
    "credit-toy": (["--toy-lq"], COMMON | {"layers", "means"}),
    "edges": (["checkpoints_example/gsnn/gsnn.pt", "--top", "5"],
              COMMON | {"n_nodes", "n_observations", "scoring", "top_edges", "params", "checkpoint"}),
    "relevance": (["checkpoints_example/multihead/multihead.pt", "--sensitivity"],
                  COMMON | {"trunk", "per_head", "feature_names", "head_names", "sensitivity", "checkpoint"}),
    "inspect": (["checkpoints_example/resmlp_dfa.pt"], COMMON | {"tensors", "checkpoint", "needs_unsafe_unpickling"}),
    "lint": (["fadiag"], COMMON | {"findings", "n_files"}),
}


def _argv(cmd: str, fmt: str) -> list:
    name = cmd.split("-")[0]
    return [name, *COMMANDS[cmd][0], "--format", fmt] + (["-q"] if name not in ("inspect", "lint") else [])


@pytest.fixture(scope="module")
def outputs():
    """Run every command in every format once, from the repo root (paths in reports stay relative)."""
    from typer.testing import CliRunner

    from fadiag.cli import app

    runner = CliRunner(env={"COLUMNS": "120", "NO_COLOR": "1"})
    out = {}
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        for cmd in COMMANDS:
            for fmt in Format:
                res = runner.invoke(app, _argv(cmd, fmt.value))
                assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
                out[cmd, fmt.value] = (res.exit_code, res.stdout, res.stderr)
    finally:
        os.chdir(cwd)
    return out


@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_json_keys_and_exit_code(outputs, cmd):
    code, out, err = outputs[cmd, "json"]
    assert code in (0, 1), err
    rep = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    missing = COMMANDS[cmd][1] - set(rep)
    assert not missing, missing
    assert rep["schema"].startswith("fadiag.")
    assert code == (1 if any(f["flagged"] for f in rep["flags"]) else 0)


@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_every_format_agrees(outputs, cmd):
    code_json, out_json, _ = outputs[cmd, "json"]
    rep = json.loads(out_json)
    n_flagged = sum(1 for f in rep["flags"] if f["flagged"])
    n_skipped = sum(1 for f in rep["flags"] if f["flagged"] is None)
    for fmt in Format:
        code, out, err = outputs[cmd, fmt.value]
        assert code == code_json, (fmt, err)
        assert out.strip(), fmt
        assert "Traceback" not in err
    # jsonl: one object, the same as json
    lines = outputs[cmd, "jsonl"][1].splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == rep
    # junit: one failure per flagged flag (+ failing per-layer cases only on null audit values)
    root = ET.fromstring(outputs[cmd, "junit"][1])
    suites = root.findall("testsuite")
    assert len(suites) == 1
    flag_cases = [c for c in suites[0].findall("testcase") if not c.get("classname", "").endswith(".layers")]
    assert len(flag_cases) == len(rep["flags"])
    assert sum(1 for c in flag_cases if c.find("failure") is not None) == n_flagged
    assert sum(1 for c in flag_cases if c.find("skipped") is not None) == n_skipped
    assert int(suites[0].get("tests")) == len(suites[0].findall("testcase"))
    # github: every line a workflow command or the summary line; one ::error per flagged flag
    gh = outputs[cmd, "github"][1].splitlines()
    assert all(l.startswith("::") or l.startswith("fadiag: ") for l in gh), gh
    assert sum(l.startswith("::error") for l in gh) == n_flagged
    assert all("\n" not in l and "\r" not in l for l in gh)
    # markdown: a title, the verdict, a table (the verdict the one rule gives the report's flags)
    verdict = from_dict(rep).verdict
    md = outputs[cmd, "markdown"][1]
    assert md.startswith("# ") and verdict.split(":")[0] in md and "\n| " in md
    # table: the verdict is shown
    assert verdict.split(":")[0] in outputs[cmd, "table"][1]


GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.mark.parametrize("cmd", ["credit", "credit-toy", "edges", "relevance"])
def test_golden_json(outputs, cmd):
    """A diff alarm on the shipped examples' reports, not a reference: every number in them is checked
    against its slow reference in that family's tests. Floats compare at float32 tolerance (tests/_tol.py):
    a newer numpy/scipy/torch build moves float32 results by a few ULPs, and that is not a change."""
    rep = json.loads(outputs[cmd, "json"][1])
    rep["fadiag_version"] = "{fadiag_version}"
    text = json.dumps(rep, indent=1, sort_keys=True) + "\n"
    path = GOLDEN / f"{cmd}.json"
    if os.environ.get("FADIAG_REGEN_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing {path}: run with FADIAG_REGEN_GOLDEN=1"
    assert_tree_close(json.loads(text), json.loads(path.read_text()), "float32", where=cmd)


def test_every_shipped_top_level_checkpoint_gives_one_jsonl_verdict(run_cli, monkeypatch):
    """`fadiag audit checkpoints_example/*.pt --format jsonl | jq -r .verdict`: one verdict per line."""
    monkeypatch.chdir(REPO)
    cks = sorted(Path("checkpoints_example").glob("*.pt"))
    assert len(cks) >= 4
    code, out, err = run_cli(["audit", *cks, "--format", "jsonl", "-q"])
    assert code == 1, err  # the DFA example is walked back
    lines = out.splitlines()
    assert len(lines) == len(cks)
    verdicts = [json.loads(l)["verdict"] for l in lines]
    assert verdicts[[c.name for c in cks].index("resmlp_bp.pt")] == "trustworthy"
    assert all(v == "trustworthy" or v.startswith("needs walk-back: ") for v in verdicts)
