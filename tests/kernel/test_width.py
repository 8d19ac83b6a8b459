"""Every command's table fits the terminal it is printed on, as rich itself measures it.

No test sets a width: the terminal size comes from ``os.get_terminal_size`` (what rich asks; COLUMNS is
removed, as bash does not export it), or, end to end, from a real pseudo-terminal of 80 columns around
``fadiag report``. Fitting means no line longer than the terminal, and nothing cut off with "…"."""

from __future__ import annotations

import json
import os
import sys

import pytest
from rich.cells import cell_len

from _shipped import COMMANDS, REPO, shipped_reports


def _fake_terminal(monkeypatch, cols: int):
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((cols, 40)))


def _check_fits(text: str, cols: int, where: str):
    lines = text.splitlines()
    assert len(lines) > 3, where
    too_long = [(cell_len(l), l) for l in lines if cell_len(l) > cols]
    assert not too_long, f"{where}: {len(too_long)} line(s) wider than {cols}: {too_long[:2]}"
    assert "…" not in text, f"{where}: a cell was cut off"


@pytest.mark.parametrize("cols", [80, 120])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_table_fits_detected_width(monkeypatch, capsys, name, cols):
    from fadiag.cli import emit
    from fadiag.render import Format
    from fadiag.reports import from_dict

    rep = from_dict(shipped_reports()[name])
    _fake_terminal(monkeypatch, cols)
    emit([rep], Format.table, None)  # the CLI's own path to stdout
    out = capsys.readouterr().out
    _check_fits(out, cols, name)


def test_narrow_terminal_changes_the_layout(monkeypatch):
    from fadiag.render import render

    rep = shipped_reports()["audit_dfa"]
    _fake_terminal(monkeypatch, 80)
    narrow = render([rep], "table")
    _fake_terminal(monkeypatch, 120)
    wide = render([rep], "table")
    assert narrow != wide and max(map(cell_len, narrow.splitlines())) <= 80 < max(map(cell_len, wide.splitlines()))


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_real_80_column_terminal(tmp_path):
    """`fadiag report R.json --format table` inside an 80-column pty, COLUMNS unset: every report fits."""
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    reps = shipped_reports()
    path = tmp_path / "all.json"
    path.write_text(json.dumps(list(reps.values())))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["NO_COLOR"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "fadiag", "report", str(path), "--format", "table", "--exit-zero"],
                            stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 65536)
        except OSError:  # the child closed the pty
            break
        if not b:
            break
        chunks.append(b)
    proc.wait(timeout=120)
    os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    assert proc.returncode == 0, text[-2000:]
    for name in COMMANDS:  # every report is in there
        assert f"fadiag {name.split('_')[0]}" in text, name
    _check_fits(text, 80, "pty")


def test_credit_with_many_etas_and_a_bridge_fits_80(monkeypatch):
    """More columns than the shipped example has: six η and a bridge residual still fit 80 columns."""
    import copy

    from fadiag.render import render

    rep = copy.deepcopy(shipped_reports()["credit_dfa"])
    etas = ["0.001", "0.01", "0.1", "0.3", "1.0", "3.0"]
    for row in rep["layers"]:
        row["nudging"] = {e: -1.234567e-05 * (i + 1) for i, e in enumerate(etas)}
        row["bridge_residual"] = 0.0123456
    _fake_terminal(monkeypatch, 80)
    out = render([rep], "table")
    _check_fits(out, 80, "credit, 6 etas")
    assert all(f"η={e}" in out for e in etas) and "bridge R_l" in out
