"""The CLI as a package (issue 11): one short function per command, state in click's context object, one
output path that renders typed reports, the GitHub step summary appended by the CLI layer, and a sweep of
any command saying each checkpoint's verdict like the one-checkpoint run."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from conftest import EXAMPLES

COMMANDS = ("audit", "credit", "edges", "relevance", "inspect", "lint", "report", "compare")


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_is_one_short_function(name):
    """parse -> API -> render -> exit code: the command's body (after its signature and docstring) is at most
    40 lines, and its module holds no other command."""
    import importlib.util

    from fadiag.registry import get

    fam = get(name)  # a family's command module is named by its record (fadiag.registry); report is the kernel's
    path = Path(importlib.util.find_spec(fam.command if fam else f"fadiag.cli.{name}").origin)
    tree = ast.parse(path.read_text())
    fns = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    commands = [f for f in fns.values() if any("command" in ast.unparse(d) for d in f.decorator_list)]
    assert [f.name for f in commands] == [name]
    fn = commands[0]
    first = fn.body[1] if isinstance(fn.body[0], ast.Expr) else fn.body[0]  # after the docstring
    assert fn.end_lineno - first.lineno + 1 <= 40, (name, fn.end_lineno - first.lineno + 1)


def test_no_state_in_class_attributes():
    """Per-invocation switches live in click's ctx.obj (fadiag.cli.app.State), not in mutable globals."""
    import fadiag.cli
    from fadiag.cli.app import State

    assert not hasattr(fadiag.cli, "Ctx")
    assert State().quiet is False and State(quiet=True) != State()


def test_a_quiet_run_does_not_silence_the_next(run_cli):
    """Two invocations in one process: --quiet on the first leaves the second's verdict line alone."""
    toy = ["credit", "--toy-lq", "-f", "json"]
    code, out, err = run_cli([*toy, "-q"])
    assert code == 0 and err == ""
    code, out2, err2 = run_cli(toy)
    assert code == 0 and out2 == out and err2.strip() == f"fadiag: toy LQ: {json.loads(out)['verdict']}"


def test_step_summary_is_appended_by_the_cli_layer(monkeypatch, tmp_path, capsys):
    """The renderer gives the job summary as text (render.github.step_summary_markdown); the CLI appends it to
    $GITHUB_STEP_SUMMARY, after what earlier steps wrote, and warns (never fails) when it cannot."""
    from fadiag.cli import output
    from fadiag.render import github
    from fadiag.reports import load_file

    saved = tmp_path / "a.json"
    saved.write_text(json.dumps(_toy_report()))
    reports = load_file(saved)
    seen = []
    monkeypatch.setattr(github, "step_summary_markdown", lambda rs: seen.append(rs) or "## summary", raising=False)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert output.append_step_summary(reports) == str(summary)
    output.append_step_summary(reports)
    assert summary.read_text(encoding="utf-8") == "earlier step\n## summary\n## summary\n"
    assert seen[0] == reports  # the typed reports, as rendered
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", "")
    assert output.append_step_summary(reports) is None and len(seen) == 2
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no" / "such" / "dir.md"))
    assert output.append_step_summary(reports) is None
    assert "cannot append the job summary" in capsys.readouterr().err


def test_format_github_writes_the_summary_once_per_run(run_cli, monkeypatch, tmp_path):
    saved = tmp_path / "a.json"
    saved.write_text(json.dumps(_toy_report()))
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    appended = []
    for _ in range(2):
        code, out, err = run_cli(["report", saved, "-f", "github"])
        assert code == 0 and "## " not in out, err  # the markdown goes to the summary file, not to stdout
        appended.append(summary.read_text(encoding="utf-8").removeprefix("earlier step\n"))
    first = appended[0]
    assert "verdict" in first.lower() and appended[1] == first + first  # each run appended its summary once


def test_sweep_of_any_command_says_each_verdict(run_cli):
    """relevance over two checkpoints: the reports of the one-checkpoint run (settings aside), each verdict
    line on stderr as the one-checkpoint run writes it."""
    mh = str(EXAMPLES / "multihead" / "multihead.pt")
    code1, one, err1 = run_cli(["relevance", mh, "-f", "jsonl"])
    code2, two, err2 = run_cli(["relevance", mh, mh, "-f", "jsonl"])
    assert code1 == code2 == 0, err2
    single = json.loads(one)
    lines = [json.loads(line) for line in two.splitlines()]
    assert len(lines) == 2 and all(r | {"settings": None} == single | {"settings": None} for r in lines)
    assert err2.splitlines() == err1.splitlines() * 2 == [f"fadiag: {mh}: {single['verdict']}"] * 2


def _toy_report() -> dict:
    from _shipped import shipped_reports

    return shipped_reports()["credit_toy"]
