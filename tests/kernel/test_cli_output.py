"""The CLI's output path: an unwritable output folder caught before any work, the progress spinner from the
start, the one-line verdict after the report (and not with --quiet)."""

from __future__ import annotations

import io
import sys

import pytest

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
