"""fadiag lint, compare and inspect: each rule fires on the pitfall and not on the fix; the regression
gate exits 1 on a degraded report; inspect reads without unpickling and names unsafe globals."""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import EXAMPLES

from fadiag.lint import lint_paths

BAD_GOOD = {
    "norm-p-minus-1": ("n = h.norm(-1)\nm = torch.norm(h, p=-1)\n", "n = h.norm(dim=-1)\nm = h.norm(p=2, dim=-1)\n"),
    "cosine-eps": ("c = F.cosine_similarity(a, grad, dim=-1)\n", "c = (a * grad).sum(-1) / (a.norm(dim=-1) * grad.norm(dim=-1))\n"),
    "fp16-metrics": ("with torch.autocast('cuda', dtype=torch.float16):\n    pass\ng = g.half()\n",
                     "with torch.autocast('cuda', dtype=torch.bfloat16):\n    pass\n"),
    "feedback-redraw": ("feedback = torch.randn(10, 64)\n", "feedback = ckpt['feedback']\n"),
    "self-cosine-fallback": ("gamma = 1.0\n", "gamma = None  # N/A\n"),
}


#: The patterns the first rules missed (fadiag issue 12), each beside a near miss that must stay quiet.
MISSED = {
    "cosine-eps": ("c = F.cosine_similarity(g, g_bp)\nd = torch.nn.functional.cosine_similarity(a, bp_grad)\n",
                   "c = F.cosine_similarity(emb_a, emb_b)\n"),
    "self-cosine-fallback": ("cos = (a * g).sum() if g is not None else 1.0\nalign = x if ok else 1.\n",
                             "scale = s if s else 1.0\ncos = (a * g).sum() if g is not None else None\n"),
    "feedback-redraw": ("B = torch.randn(10, 64)\nB_l = torch.rand(10, 64)\nB[l] = torch.randn(10, 64)\n",
                        "Bx = torch.randn(10, 64)\nbatch = torch.randn(4, 8)\n"),
}


@pytest.mark.parametrize("rule", sorted(MISSED))
def test_lint_catches_the_missed_patterns(tmp_path, rule):
    bad, good = MISSED[rule]
    (tmp_path / "bad.py").write_text(bad)
    (tmp_path / "good.py").write_text(good)
    rep = lint_paths([str(tmp_path)], [rule])
    hits = sorted((os.path.basename(f["file"]), f["line"]) for f in rep.findings)
    assert hits == [("bad.py", i + 1) for i in range(bad.count("\n"))], rep.findings


@pytest.mark.parametrize("rule", sorted(BAD_GOOD))
def test_lint_rule_fires_on_pitfall_only(tmp_path, rule):
    bad, good = BAD_GOOD[rule]
    (tmp_path / "bad.py").write_text("import torch\nimport torch.nn.functional as F\n" + bad)
    (tmp_path / "good.py").write_text("import torch\nimport torch.nn.functional as F\n" + good)
    rep = lint_paths([str(tmp_path)], [rule])
    files = {os.path.basename(f["file"]) for f in rep.findings}
    assert files == {"bad.py"}, rep.findings
    assert all(f["line"] >= 3 for f in rep.findings)
    assert rep.verdict == f"needs walk-back: {rep.flags[0].name}" and rep.schema == "fadiag.lint/2"


def test_lint_ignores_comments_and_strings(tmp_path):
    (tmp_path / "a.py").write_text('# x.norm(-1) in a comment\ns = "h.norm(-1) gamma = 1.0"\n')
    rep = lint_paths([str(tmp_path)])
    assert rep.findings == [] and rep.verdict == "trustworthy"


def test_lint_cli_exit_codes_and_github_annotations(run_cli, tmp_path):
    (tmp_path / "t.py").write_text("x = h.norm(-1)\n")
    code, out, err = run_cli(["lint", tmp_path, "--format", "github"])
    assert code == 1
    assert any(l.startswith("::warning file=") and ",line=1," in l for l in out.splitlines())
    code, out, err = run_cli(["lint", tmp_path / "missing"])
    assert code == 2 and "no such file" in err


def test_github_format_appends_the_step_summary(run_cli, tmp_path, monkeypatch):
    """The CLI, not the renderer, appends the markdown form to $GITHUB_STEP_SUMMARY (appending, twice)."""
    (tmp_path / "t.py").write_text("x = h.norm(-1)\n")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for _ in range(2):
        code, out, err = run_cli(["lint", tmp_path / "t.py", "--format", "github"])
        assert code == 1 and "## " not in out
    text = summary.read_text()
    assert text.startswith("earlier step\n") and text.count("# fadiag lint") == 2 and "## Findings" in text
    code, out, err = run_cli(["lint", tmp_path / "t.py", "--format", "json"])
    assert summary.read_text() == text  # other formats leave it alone


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

    from fadiag.compare import compare_reports
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


def test_inspect_lists_tensors_and_feedback(run_cli):
    code, out, err = run_cli(["inspect", EXAMPLES / "resmlp_dfa.pt", "--format", "json"])
    assert code == 0, err
    rep = json.loads(out)
    keys = {t["key"]: t for t in rep["tensors"]}
    assert keys["feedback"]["shape"] == [7, 10, 64]
    assert keys["model.embed.weight"]["dtype"] == "float32"
    assert rep["state_dict_key"] == "model" and rep["needs_unsafe_unpickling"] is False


def test_inspect_counts_nonfinite_and_fp16(run_cli, tmp_path):
    sd = {"w": torch.tensor([1.0, float("nan"), float("inf")]), "h": torch.ones(3, dtype=torch.float16)}
    torch.save(sd, tmp_path / "x.pt")
    code, out, err = run_cli(["inspect", tmp_path / "x.pt", "--format", "json"])
    assert code == 1
    rep = json.loads(out)
    flags = {f["id"]: f for f in rep["flags"]}
    assert flags["nonfinite"]["flagged"] and flags["nonfinite"]["value"] == 2
    assert flags["fp16"]["flagged"]


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch INSPECT_MARKER",))


def test_inspect_names_unsafe_globals_without_running_them(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"x": _Payload()}, tmp_path / "evil.pt")
    code, out, err = run_cli(["inspect", tmp_path / "evil.pt", "--format", "json"])
    assert code == 1
    rep = json.loads(out)
    assert rep["needs_unsafe_unpickling"] is True
    assert any("system" in g for g in rep["unsafe_globals"])
    assert not (tmp_path / "INSPECT_MARKER").exists()
