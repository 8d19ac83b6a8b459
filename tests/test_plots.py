"""--plot for every command that draws: a real image file appears (atomically), and without matplotlib the
user gets the one-line hint to install the extra, exit 2."""

from __future__ import annotations

import builtins

import pytest

from conftest import EXAMPLES

pytest.importorskip("matplotlib")

CASES = {
    "audit": ["audit", EXAMPLES / "resmlp_dfa.pt"],
    "credit": ["credit", EXAMPLES / "resmlp_dfa.pt"],
    "credit-toy": ["credit", "--toy-lq"],
    "edges": ["edges", EXAMPLES / "gsnn" / "gsnn.pt"],
    "relevance": ["relevance", EXAMPLES / "multihead" / "multihead.pt"],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_an_image(run_cli, tmp_path, case, suffix):
    out = tmp_path / f"fig{suffix}"
    code, _, err = run_cli([*CASES[case], "-q", "-f", "json", "--plot", out])
    assert code in (0, 1), err
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" if suffix == ".png" else b"<svg" in data[:2000]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp file left


def test_plot_suffix_is_checked_before_work(run_cli, tmp_path):
    code, _, err = run_cli(["audit", EXAMPLES / "resmlp_bp.pt", "--plot", tmp_path / "fig.bmp"])
    assert code == 2 and ".png" in err and len(err.strip().splitlines()) == 1  # no verdict line: no work done


def test_missing_matplotlib_is_a_helpful_error(run_cli, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_mpl(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    code, out, err = run_cli(["audit", EXAMPLES / "resmlp_bp.pt", "--plot", tmp_path / "f.png", "-f", "json"])
    assert code == 2 and "pip install 'fadiag[plot]'" in err and len(err.strip().splitlines()) == 1
