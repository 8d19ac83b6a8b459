"""The smaller items of fadiag issue 12, one test each: unwritable output folders caught up front, a
missing DFA feedback is bad input (exit 2), the init checkpoint for M_l found by its own layout, help
without typer's placeholders, the spinner from the start, the verdict after the report, (c)'s detail
saying what to check, the digits held-out split, and the DFA feedback layout in the README."""

from __future__ import annotations

import io
import math
import sys

import pytest
import torch

from conftest import REPO


def test_output_in_a_folder_nobody_can_write_is_refused_before_work(run_cli, monkeypatch, tmp_path):
    import os
    import tempfile

    from fadiag.cli import check_output_path
    from fadiag.errors import InputError

    if os.path.isdir("/sys") and os.access("/sys", os.W_OK):  # as root os.access says yes: the probe says no
        code, out, err = run_cli(["audit", REPO / "checkpoints_example" / "resmlp_bp.pt", "-o", "/sys/out.json"])
        assert code == 2 and out == "" and err.count("\n") == 1 and "/sys/out.json" in err, err
    def refuse(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(InputError, match="cannot create a file in that folder"):
        check_output_path(str(tmp_path / "r.json"), "--output")


def test_dfa_without_feedback_is_exit_2(run_cli, tiny_resmlp_ckpt):
    f = tiny_resmlp_ckpt()
    code, out, err = run_cli(["credit", f.ckpt, "--signal", "dfa", "-f", "json"])
    assert code == 2 and out == "", (code, err)
    assert err.count("\n") == 1 and "feedback" in err and "never redraws" in err


def test_init_checkpoint_is_found_by_its_own_layout(run_cli, tiny_resmlp_ckpt, tmp_path):
    """The main checkpoint nests its weights under "model" (checkpoint.state_dict: model); the init file
    is a plain flat dict of tensors: M_l is still computed, and equals the float64 reference."""
    import json

    f = tiny_resmlp_ckpt(spec_overrides={"checkpoint": {"state_dict": "model"}})
    torch.manual_seed(123)
    init = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in f.state_dict.items()}
    torch.save(init, tmp_path / "init_flat.pt")
    code, out, err = run_cli(["credit", f.ckpt, "--signal", "bp", "--init", tmp_path / "init_flat.pt", "-f", "json",
                              "-q"])
    assert code in (0, 1), err
    rep = json.loads(out)
    names = [k for k in f.state_dict if k.startswith("blocks.1.")]
    num = sum(float(((f.state_dict[k].double() - init[k].double()) ** 2).sum()) for k in names)
    den = sum(float((init[k].double() ** 2).sum()) for k in names)
    assert rep["layers"][2]["drift"] == pytest.approx(math.sqrt(num / den), rel=1e-10)


def _help(run_cli, cmd):
    code, out, err = run_cli([cmd, "--help"])
    assert code == 0, err
    return out


@pytest.mark.parametrize("cmd", ["audit", "credit", "edges", "relevance", "inspect", "lint", "report", "compare"])
def test_help_has_no_placeholders_and_no_required(run_cli, cmd):
    out = _help(run_cli, cmd)
    for bad in ("{", "<list[", "<str>", "<path>", "<int range>", "[required]", "<float>"):
        assert bad not in out, (cmd, bad)


def test_help_names_defaults_and_missing_arguments_still_fail(run_cli):
    credit = " ".join(_help(run_cli, "credit").split())
    assert "--toy-d N Toy LQ width. [default: 16]" in credit
    assert "credit.eps in the spec, else 0.001" in credit and "credit.signal in the spec, else bp" in credit
    edges = " ".join(_help(run_cli, "edges").split())
    assert "[default: 20]" in edges and "edges.method in the spec, else spearman" in edges
    code, out, err = run_cli(["lint"])  # no path, no config: still the one-line usage error
    assert code == 2 and err.count("\n") == 1 and "Missing argument" in err


def test_progress_shows_from_the_start(monkeypatch):
    from fadiag import cli

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert cli.Progress("loading x.pt", quiet=True).bar is None
    with cli.Progress("loading x.pt") as p:
        assert p.bar is not None and p.bar.live.is_started
        (task,) = p.bar.tasks
        assert task.description == "loading x.pt" and task.total is None  # a spinner before any step
        p(1, 4)
        assert p.bar.tasks[0].total == 4 and p.bar.tasks[0].completed == 1


def _credit_ctx(*args):
    """The click context of ``fadiag credit ARGS``, parsed as the CLI parses it (ctx.params filled)."""
    import typer.main

    from fadiag.cli import app

    return typer.main.get_command(app).commands["credit"].make_context("credit", list(args))


def test_verdict_line_comes_after_the_report_and_not_twice(monkeypatch):
    from _shipped import shipped_reports
    from fadiag import cli
    from fadiag.reports import from_dict

    rep = from_dict(shipped_reports()["credit_toy"])
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    monkeypatch.setattr(sys, "stderr", buf)
    assert cli.finish(_credit_ctx("--toy-lq", "-f", "json"), [rep], labels=["toy LQ"]) == 0
    text = buf.getvalue()
    assert text.rstrip().endswith("fadiag: toy LQ: trustworthy") and text.index('"schema"') < text.index("fadiag: toy LQ")
    buf.seek(0)
    buf.truncate()
    assert cli.finish(_credit_ctx("--toy-lq", "-f", "json", "-q"), [rep], labels=["toy LQ"]) == 0
    assert "fadiag: toy LQ" not in buf.getvalue()  # --quiet: the report only
    buf.seek(0)
    buf.truncate()
    monkeypatch.setattr(buf, "isatty", lambda: True, raising=False)  # a table on the terminal ends on the verdict
    monkeypatch.setenv("NO_COLOR", "1")
    cli.finish(_credit_ctx("--toy-lq", "-f", "table"), [rep], labels=["toy LQ"])
    assert "fadiag: toy LQ" not in buf.getvalue() and "verdict: trustworthy" in buf.getvalue()


def test_stability_detail_says_what_to_check():
    from fadiag.diagnostics.audit_quantities import stability_detail

    flagged = stability_detail(0.378, 0.3)
    for words in ("0.378", "> 0.3", "not trained to convergence", "few", "128", "(a), (b) or (d)",
                  "docs/science.md §1"):
        assert words in flagged, words
    assert stability_detail(0.1, 0.3) == "mean pairwise cosine of the batch-mean BP gradients = 0.1"
    assert "docs/science.md" not in stability_detail(0.3, 0.3)  # at the ceiling: not flagged, no advice


def test_digits_held_out_split():
    pytest.importorskip("sklearn")
    import numpy as np

    from fadiag.data import digits

    xt, yt = digits("test")
    xr, yr = digits("train")
    xa, ya = digits("all")
    assert (len(xt), len(xr), len(xa)) == (360, 1437, 1797)
    rows = lambda x: {r.tobytes() for r in x.numpy()}
    assert not (rows(xt) & rows(xr)) or len(rows(xt) & rows(xr)) < 5  # duplicated images aside, disjoint
    assert len(rows(xt) | rows(xr)) == len(rows(xa))
    assert np.bincount(yt.numpy()).min() >= 35  # stratified: every class held out in proportion
    with pytest.raises(Exception, match="split"):
        digits("val")


def test_readme_states_the_dfa_feedback_layout():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### `fadiag credit`")[1].split("\n### ")[0]
    assert "(L+1, C, d)" in section and "a_l = e @ B_l" in section and "feedback" in section


def test_summary_has_no_null_baseline_and_no_dict_repr(monkeypatch):
    from _shipped import shipped_reports
    from fadiag.render import render

    monkeypatch.setenv("COLUMNS", "100")
    rep = dict(shipped_reports()["audit_bp"])
    trained = {**rep, "frozen_baseline_source": "trained: frozen blocks (seed 0), BP recipe "
                                                "{'optimizer': 'AdamW', 'lr': 0.002, 'epochs': 10}"}
    for fmt in ("table", "markdown"):
        out = render([trained], fmt)
        assert "optimizer AdamW, lr 0.002, epochs 10" in out and "{'" not in out, fmt
    none = {**rep, "frozen_baseline_acc": None, "frozen_baseline_source": None}
    out = render([none], "table")
    assert "no frozen baseline, (d) skipped" in out and "baseline null" not in out and "None" not in out
