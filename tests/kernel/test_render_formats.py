"""Output formats: every Format has a renderer; markdown / junit / github on real and synthetic reports.

The two shipped example checkpoints are audited once per module (DFA: flags (a), (b), (d); BP: nothing).
Golden files are rendered from the hand-made reports of tests/_reports.py (not from fadiag's own numbers):
``FADIAG_REGEN_GOLDEN=1 pytest tests/kernel/test_render_formats.py`` rewrites tests/golden/.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _reports import audit_fixture
from fadiag.render import _MODULES, Format, render, renderer
from fadiag.render import github, junit, markdown
from fadiag.reports import Report, from_dict, register
from fadiag.families.lint.report import LintReport

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TEMPLATE = ROOT / "REPORTING_TEMPLATE.md"
DFA = "checkpoints_example/resmlp_dfa.pt"
BP = "checkpoints_example/resmlp_bp.pt"


@pytest.fixture(scope="module")
def reports():
    """{"dfa": dict, "bp": dict}: real audit reports, paths relative to the repo root as the CLI writes them."""
    import fadiag

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        return {name: fadiag.audit(fadiag.load(path)).to_dict() for name, path in (("dfa", DFA), ("bp", BP))}


@pytest.fixture(autouse=True)
def no_step_summary(monkeypatch):
    # A developer running the tests inside an Actions job must not get summaries appended.
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def typed(*dicts) -> list:
    """The renderers take typed reports: saved dicts are read through the schema registry."""
    return [from_dict(d) for d in dicts]


def flagged(r: dict) -> list:
    return [f for f in r["flags"] if f["flagged"]]


def skipped(r: dict) -> list:
    return [f for f in r["flags"] if f["flagged"] is None]


def synthetic(base: dict) -> dict:
    """A DFA report with hostile text, a skipped flag and non-finite values (null, and a raw NaN)."""
    r = copy.deepcopy(base)
    r["method_name"] = "DFA|v2"
    r["checkpoint"]["path"] = "runs/a,b:c/ck|1.pt"
    r["flags"][0]["detail"] = "50% of rows: a, b\nsecond line\r|pipe"
    r["flags"][3].update(flagged=None, value=None, detail="no frozen baseline: (d) skipped")
    r["frozen_baseline_acc"] = None
    r["frozen_baseline_source"] = None
    r["residual_norms"][2] = None
    r["bp_grad_norms"][4] = float("nan")
    return r


def template_headings() -> list:
    return [line for line in TEMPLATE.read_text(encoding="utf-8").splitlines() if line.startswith("## ")]


def mask_version(text: str, r: dict) -> str:
    return text.replace(r["fadiag_version"], "{fadiag_version}") if r.get("fadiag_version") else text


# ------------------------------------------------------------------------------------------ registry

def test_every_format_maps_to_an_importable_renderer(reports):
    assert set(_MODULES) == set(Format)
    for fmt in Format:
        mod = importlib.import_module(_MODULES[fmt])
        assert renderer(fmt) is mod.render
        out = render(typed(reports["dfa"], reports["bp"]), fmt)
        assert isinstance(out, str) and out.strip(), fmt


# --------------------------------------------------------------------------------------------- junit

def test_junit_counts_and_names(reports):
    rs = [reports["dfa"], reports["bp"]]
    root = ET.fromstring(junit.render(typed(*rs)))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [f"fadiag.audit {DFA}", f"fadiag.audit {BP}"]
    for s, r in zip(suites, rs):
        cases = s.findall("testcase")
        n_layers = len(r["residual_norms"])
        assert int(s.get("tests")) == len(cases) == len(r["flags"]) + n_layers
        assert int(s.get("failures")) == len(s.findall("testcase/failure")) == len(flagged(r))
        assert int(s.get("skipped")) == len(s.findall("testcase/skipped")) == len(skipped(r))
        assert s.get("errors") == "0"
        flag_cases = [c for c in cases if c.get("classname") == f"fadiag.audit.{r['method_name']}"]
        assert [c.get("name") for c in flag_cases] == [f"({f['id']}) {f['name']}" for f in r["flags"]]
        failed = [c.get("name") for c in cases if c.find("failure") is not None]
        assert failed == [f"({f['id']}) {f['name']}" for f in flagged(r)]
        for c in cases:
            fe = c.find("failure")
            if fe is not None:
                assert fe.get("type") == "flag" and fe.text
        layer_cases = [c for c in cases if c.get("classname").endswith(".layers")]
        assert [c.get("name") for c in layer_cases] == [f"layer {i}" for i in range(n_layers)]
        assert all(c.find("system-out") is not None for c in layer_cases)
    # DFA: (a), (b), (d) fail; BP: nothing.
    assert [len(flagged(r)) for r in rs] == [3, 0]
    assert root.get("failures") == "3" and root.get("errors") == "0"
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites)
    props = {p.get("name"): p.get("value") for p in suites[0].iter("property")}
    assert props["verdict"] == reports["dfa"]["verdict"]
    assert props["checkpoint.sha256"] == reports["dfa"]["checkpoint"]["sha256"]


def test_junit_skipped_nonfinite_and_escaping(reports):
    r = synthetic(reports["dfa"])
    text = junit.render(typed(r))
    s = ET.fromstring(text).find("testsuite")
    assert s.get("name") == "fadiag.audit runs/a,b:c/ck|1.pt"
    sk = s.findall("testcase/skipped")
    assert [e.get("message") for e in sk] == ["no frozen baseline: (d) skipped"]
    # (a), (b) flagged; layers 2 (h null) and 4 (g NaN) fail as non-finite; (d) is skipped, not failed.
    failures = s.findall("testcase/failure")
    assert [f.get("type") for f in failures] == ["flag", "flag", "non-finite", "non-finite"]
    assert s.get("failures") == "4" and s.get("skipped") == "1"
    assert failures[0].text == "50% of rows: a, b\nsecond line\n|pipe"  # XML normalises \r
    assert not re.search(r"\bnan\b", text, re.I)
    assert "null" in text


def test_junit_parses_with_junitparser(reports, tmp_path):
    junitparser = pytest.importorskip("junitparser")
    p = tmp_path / "r.xml"
    p.write_text(junit.render(typed(reports["dfa"], reports["bp"])), encoding="utf-8")
    xml = junitparser.JUnitXml.fromfile(str(p))
    suites = list(xml)
    assert [s.name for s in suites] == [f"fadiag.audit {DFA}", f"fadiag.audit {BP}"]
    assert [s.failures for s in suites] == [3, 0]
    cases = list(suites[0])
    failed = [c.name for c in cases if c.result and isinstance(c.result[0], junitparser.Failure)]
    assert failed == [f"({f['id']}) {f['name']}" for f in flagged(reports["dfa"])]


@register
@dataclass(frozen=True, kw_only=True)
class _CustomReport(Report):
    """A family fadiag does not know: the generic markdown section renders it."""

    SCHEMA = "fadiag.custom/1"
    KEYS = ("schema", "method_name", "flags", "verdict", "checkpoint", "layers", "gamma_mean")
    method_name: str = ""
    layers: Any = None
    gamma_mean: Any = None


def test_generic_layers_family():
    """A family with ``layers`` (credit): one markdown row and one informational testcase per layer."""
    r = {"schema": "fadiag.credit/1", "method_name": "DFA", "verdict": "needs walk-back: x",
         "signal": "dfa", "signal_source": "feedback", "means": {},
         "flags": [{"id": "f", "name": "Γ uninterpretable", "flagged": True, "value": 4.7e-08, "threshold": 1e-07,
                    "detail": "‖g‖ < floor"}],
         "checkpoint": {"path": "a.pt", "sha256": "ab", "format": "torch", "trusted": False},
         "layers": [{"layer": 0, "gamma": 0.43, "a_norm": 1.5}, {"layer": 1, "gamma": None, "a_norm": 2.0}],
         "gamma_mean": {"all_layers": 0.43, "deep_only": None, "aggregation": "mean over layers"}}
    md = markdown.render(typed({**r, "schema": "fadiag.custom/1"}))  # credit has its own form; this is the generic one
    assert "| layer | gamma | a_norm |" in md
    assert "| 0 | 0.4300 | 1.500 |" in md and "| 1 | null | 2.000 |" in md  # one format per column
    assert "| gamma_mean.deep_only | null |" in md
    s = ET.fromstring(junit.render(typed(r))).find("testsuite")
    assert s.get("name") == "fadiag.credit a.pt" and s.get("tests") == "3" and s.get("failures") == "1"
    assert [c.get("name") for c in s.iter("testcase")] == ["(f) Γ uninterpretable", "layer 0", "layer 1"]
    assert "gamma = null" in s.findall("testcase")[2].find("system-out").text
    # No checkpoint, no flags (lint/compare): still a valid suite and section.
    bare = LintReport(paths=[], n_files=0, findings=[])
    assert ET.fromstring(junit.render([bare])).find("testsuite").get("tests") == "0"
    assert markdown.render([bare]).startswith("# fadiag lint")
    assert github.render([bare]) == "fadiag: fadiag.lint/2: trustworthy\n"


# -------------------------------------------------------------------------------------------- github

def check_github_lines(text: str) -> list:
    lines = text.splitlines()
    assert text.endswith("\n")
    assert all(line.startswith("::") or line.startswith("fadiag: ") for line in lines), lines
    return lines


def test_github_commands_on_real_reports(reports):
    rs = [reports["dfa"], reports["bp"]]
    lines = check_github_lines(github.render(typed(*rs)))
    errors = [line for line in lines if line.startswith("::error ")]
    assert len(errors) == sum(len(flagged(r)) for r in rs) == 3
    assert errors[0] == (f"::error file={DFA},title=fadiag (a) residual stream exploded::"
                         f"{reports['dfa']['flags'][0]['detail']}")
    assert lines[-2:] == [f"fadiag: {DFA}: {reports['dfa']['verdict']}", f"fadiag: {BP}: trustworthy"]


def test_github_escaping(reports):
    r = synthetic(reports["dfa"])
    lines = check_github_lines(github.render(typed(r)))
    assert lines[0] == ("::error file=runs/a%2Cb%3Ac/ck|1.pt,title=fadiag (a) residual stream exploded::"
                        "50%25 of rows: a, b%0Asecond line%0D|pipe")
    notices = [line for line in lines if line.startswith("::notice ")]
    assert notices == ["::notice file=runs/a%2Cb%3Ac/ck|1.pt,title=fadiag (d) deep blocks fail to beat "
                       "frozen-random baseline (skipped)::no frozen baseline: (d) skipped"]
    assert len([line for line in lines if line.startswith("::error ")]) == len(flagged(r)) == 2
    assert github.escape_property("a%b\r\n:,") == "a%25b%0D%0A%3A%2C"
    assert github.escape_data("a%b\r\n:,") == "a%25b%0D%0A:,"


def test_github_step_summary_is_pure(reports, tmp_path, monkeypatch):
    """Rendering writes nothing; step_summary_markdown is the text the CLI appends to $GITHUB_STEP_SUMMARY."""
    dfa = typed(reports["dfa"])
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = github.render(dfa)
    assert summary.read_text(encoding="utf-8") == "earlier step\n"
    assert "## " not in out  # the markdown goes to the summary file, not to stdout
    text = github.step_summary_markdown(dfa)
    assert text == markdown.render(dfa) + "\n" and "## 1. Identification" in text
    assert github.step_summary_markdown([]) is None


def test_github_step_summary_appends(capsys, reports, tmp_path, monkeypatch):
    """The CLI layer appends the pure step_summary_markdown (rendering itself writes no file)."""
    from fadiag.cli.output import append_step_summary

    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert append_step_summary(typed(reports["dfa"])) == str(summary)
    append_step_summary(typed(reports["dfa"]))
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n")
    assert text.count("## 1. Identification") == 2
    assert text.count(reports["dfa"]["checkpoint"]["sha256"]) == 2
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", "")
    assert append_step_summary(typed(reports["dfa"])) is None
    # An unwritable summary warns on stderr; the annotations and the exit code still go out.
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no" / "such" / "dir.md"))
    assert append_step_summary(typed(reports["dfa"])) is None
    assert "cannot append the job summary" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ markdown

def test_markdown_follows_the_template(reports):
    heads = template_headings()
    assert len(heads) >= 6
    for r in reports.values():
        md = markdown.render(typed(r))
        out_heads = [line for line in md.splitlines() if line.startswith("## ")]
        assert out_heads == heads  # same headings, same order
        assert "_(fill in:" in md
        hs, gs = markdown.fmt_column(r["residual_norms"]), markdown.fmt_column(r["bp_grad_norms"])
        for i, (h, g) in enumerate(zip(hs, gs)):  # each column in one number format
            assert any(line.startswith(f"| {i} | {h} | {g} |") for line in md.splitlines()), i
        for f, (v, t) in zip(r["flags"], markdown.flag_cells(from_dict(r).flags)):
            assert f"| ({f['id']}) | {f['name']} | {v} | {t} |" in md
        assert r["checkpoint"]["sha256"] in md and r["verdict"] in md
        assert f"checkpoint weight dtypes: {', '.join(r['weight_dtypes'])}" in md
    dfa = markdown.render(typed(reports["dfa"]))
    assert dfa.count("**FLAG**") == 3
    assert "below the (b) floor 1.000e-07 at layers 2, 3, 4, 5, 6" in dfa
    assert "| read without unpickling | yes |" in dfa
    both = markdown.render(typed(reports["dfa"], reports["bp"]))
    assert both.count("\n---\n") == 1 and both.count("## 1. Identification") == 2


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_markdown_escaping_and_nulls(reports):
    r = synthetic(reports["dfa"])
    r["checkpoint"]["trusted"] = True
    md = markdown.render(typed(r))
    assert "50% of rows: a, b second line \\|pipe" in md
    assert "| method name | DFA\\|v2 |" in md
    # Every row of every table has as many cell separators as its header.
    table = []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            assert {unescaped_pipes(t) for t in table} == {unescaped_pipes(table[0])}, table
            table = []
    assert not re.search(r"\bnan\b", md, re.I)
    h4 = markdown.fmt_column(r["residual_norms"])[4]  # the value itself comes from the live audit
    assert "| 2 | null |" in md and f"| 4 | {h4} | null | non-finite |" in md
    t_d = markdown.flag_cells(from_dict(r).flags)[3][1]
    assert t_d == "2.000e+00"  # the thresholds column shares one format
    assert f"| (d) | deep blocks fail to beat frozen-random baseline | null | {t_d} | skipped |" in md
    assert "unknown: no baseline given, so (d) is skipped" in md
    assert "**NO**: loaded with --trust-checkpoint" in md


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_junit_and_report_round_trip(reports, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from fadiag.cli import app

    monkeypatch.chdir(ROOT)
    runner = CliRunner()
    res = runner.invoke(app, ["audit", DFA, "--format", "junit", "--quiet"])
    assert res.exit_code == 1, res.output
    assert ET.fromstring(res.stdout).find("testsuite").get("failures") == "3"

    res_md = runner.invoke(app, ["audit", DFA, "--format", "markdown", "--quiet"])
    assert res_md.exit_code == 1
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(reports["dfa"]), encoding="utf-8")
    res_rep = runner.invoke(app, ["report", str(saved), "--format", "markdown"])
    assert res_rep.exit_code == 1
    assert res_rep.stdout == res_md.stdout == markdown.render(typed(reports["dfa"]))


# -------------------------------------------------------------------------------------------- golden

@pytest.mark.parametrize("name,fmt,fname", [("dfa", Format.markdown, "audit_dfa.md"),
                                            ("bp", Format.junit, "audit_bp.junit.xml"),
                                            ("dfa", Format.github, "audit_dfa.github.txt"),
                                            ("bp", Format.markdown, "audit_bp.md")])
def test_golden(name, fmt, fname):
    """Renderer output of hand-made reports (tests/_reports.py, numbers written there): a renderer change is a
    visible diff here, and no change in a diagnostic's numbers can move these files."""
    r = audit_fixture(name)
    got = mask_version(render(typed(r), fmt), r)
    path = GOLDEN / fname
    if os.environ.get("FADIAG_REGEN_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert path.is_file(), f"missing {path}; regenerate with FADIAG_REGEN_GOLDEN=1"
    assert got == path.read_text(encoding="utf-8")
