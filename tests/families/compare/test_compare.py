"""fadiag compare: side by side, a new audit flag reaches every view, the regression gate exits 1 on a degraded
report, mixed kinds and old schemas refused."""

from __future__ import annotations

import json

import pytest

from conftest import EXAMPLES

from fadiag.families.lint.api import lint_paths


@pytest.fixture(scope="module")
def saved_reports(tmp_path_factory):
    import fadiag

    d = tmp_path_factory.mktemp("reports")
    out = {}
    for name in ("bp", "dfa"):
        r = fadiag.audit(fadiag.load(str(EXAMPLES / f"resmlp_{name}.pt"))).to_dict()
        p = d / f"{name}.json"
        p.write_text(json.dumps(r))
        out[name] = p
    return out


def test_compare_side_by_side(run_cli, saved_reports):
    code, out, err = run_cli(["compare", saved_reports["bp"], saved_reports["dfa"], "--format", "json"])
    assert code == 0
    rep = json.loads(out)
    assert rep["labels"] == ["BP", "DFA"]
    rows = {r["metric"]: r["values"] for r in rep["rows"]}
    assert rows["verdict"][0] == "trustworthy" and rows["verdict"][1].startswith("needs walk-back")
    assert rows["(a) residual stream exploded"][1] > 50 > rows["(a) residual stream exploded"][0]
    assert rows["headline acc"][0] > rows["headline acc"][1]
    bp, dfa = (json.loads(saved_reports[k].read_text()) for k in ("bp", "dfa"))
    for i, (h0, h1) in enumerate(zip(bp["residual_norms"], dfa["residual_norms"])):
        assert rows[f"residual_norms[{i}]"] == [h0, h1]
    assert rep["schema"] == "fadiag.compare/2" and rep["verdict"] == "trustworthy"  # no --baseline: gate skipped


def test_a_new_audit_flag_reaches_every_view(saved_reports):
    """A sixth audit quantity is a new flag: compare, table, markdown and junit show it, no renderer edited. (Id z: a real new quantity would take the next free letter.)"""
    import dataclasses
    import xml.etree.ElementTree as ET

    from fadiag.families.compare.api import compare_reports
    from fadiag.render import render
    from fadiag.reports import Flag, from_dict

    bp = from_dict(json.loads(saved_reports["bp"].read_text()))
    toy = Flag("z", "toy quantity over its bound", True, 0.625, 0.5, "toy detail")
    new = dataclasses.replace(bp, flags=bp.flags + (toy,))
    assert new.verdict == "needs walk-back: toy quantity over its bound"
    rows = {r["metric"]: r["values"] for r in compare_reports([bp, new]).rows}
    assert rows["(z) toy quantity over its bound"] == [None, 0.625]
    assert "toy quantity over its bound" in render([new], "table", width=200)
    md = [line for line in render([new], "markdown").splitlines() if line.startswith("| (z) | toy quantity")]
    assert len(md) == 1 and "| **FLAG** | toy detail |" in md[0]
    junit = ET.fromstring(render([new], "junit"))
    assert [c.get("name") for c in junit.iter("testcase") if c.find("failure") is not None] == [
        "(z) toy quantity over its bound"]
    gate = compare_reports([new], [bp])
    assert [g["flag"] for g in gate.regressions] == ["z"] and gate.verdict.startswith("needs walk-back: ")


def test_compare_regression_gate(run_cli, saved_reports, tmp_path):
    degraded = json.loads(saved_reports["bp"].read_text())
    degraded["flags"][1]["flagged"] = True  # (b) newly raised
    p = tmp_path / "bp_degraded.json"
    p.write_text(json.dumps(degraded))
    code, out, err = run_cli(["compare", p, "--baseline", saved_reports["bp"], "--format", "json"])
    assert code == 1
    rep = json.loads(out)
    assert [g["flag"] for g in rep["regressions"]] == ["b"]
    code, out, err = run_cli(["compare", saved_reports["bp"], "--baseline", saved_reports["bp"]])
    assert code == 0
    # a value move beyond --max-rel-change is a regression too
    moved = json.loads(saved_reports["bp"].read_text())
    moved["flags"][0]["value"] *= 3
    p2 = tmp_path / "moved.json"
    p2.write_text(json.dumps(moved))
    code, out, _ = run_cli(["compare", p2, "--baseline", saved_reports["bp"], "--max-rel-change", "0.5", "-f", "json"])
    assert code == 1 and json.loads(out)["regressions"][0]["flag"] == "a"


def test_compare_refuses_mixed_kinds(run_cli, saved_reports, tmp_path):
    other = tmp_path / "lint.json"
    other.write_text(json.dumps(lint_paths([str(tmp_path)]).to_dict()))
    code, out, err = run_cli(["compare", saved_reports["bp"], other])
    assert code == 2 and "different kinds" in err


def test_a_saved_compare_1_report_is_refused_not_half_upgraded(run_cli, saved_reports, tmp_path):
    """A compare/1 file's rows follow the /1 layout and it does not hold the reports they came from: `fadiag report`
    says so (exit 2, one line naming the file) instead of relabelling those rows /2."""
    code, out, _ = run_cli(["compare", saved_reports["bp"], saved_reports["dfa"], "--format", "json"])
    old = json.loads(out)
    old.update(schema="fadiag.compare/1", verdict="compared")
    p = tmp_path / "old_compare.json"
    p.write_text(json.dumps(old))
    code, out, err = run_cli(["report", p, "--format", "json"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert str(p) in err and "run fadiag compare again" in err
