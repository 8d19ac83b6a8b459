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


# ------------------------------------------------------------------------------ what the figures show

def _figure(schema_fn, reports):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fadiag.reports import from_dict

    fig = schema_fn(plt, [from_dict(r) for r in reports])  # figures take typed reports
    fig.canvas.draw()
    return plt, fig


def _audit_variant(rep, **changes):
    import copy

    r = copy.deepcopy(rep)
    flags = changes.pop("flags", {})
    r.update(changes)
    for f in r["flags"]:
        if f["id"] in flags:
            f["flagged"] = flags[f["id"]]
    return r


def _check_panels(fig):
    """Every panel has a y-label, an x-label or tick labels, and something drawn; labels use mathtext."""
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_ylabel().strip(), ax.get_title()
        assert ax.lines or ax.patches or ax.images or ax.collections, f"empty panel {ax.get_title()!r}"
    texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert not any("_l" in t and "$" not in t for t in texts), texts  # no literal underscores: mathtext


def _no_overlaps(fig):
    """Value labels and annotations never overlap each other, and none crosses a threshold line."""
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(r) for t in ax.texts if t.get_text()]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (ax.get_title(), a, b)
        for line in ax.lines:
            y = line.get_ydata()
            if len(y) == 2 and y[0] == y[1] and line.get_linestyle() == "--":  # a threshold line
                yd = ax.transData.transform((0, y[0]))[1]
                for t, bb in zip([t for t in ax.texts if t.get_text()], boxes):
                    assert not (bb.y0 < yd < bb.y1), (ax.get_title(), t.get_text(), y[0])


def test_audit_figure_colours_labels_and_panels():
    from matplotlib.colors import to_hex

    from _shipped import shipped_reports
    from fadiag.families.audit.figure import audit_figure
    from fadiag.render.plot import FLAG, OK

    reps = shipped_reports()
    bp = reps["audit_bp"]
    c_flagged = _audit_variant(bp, cross_batch_stability=0.378, flags={"c": True})
    no_base = _audit_variant(bp, frozen_baseline_acc=None, frozen_baseline_source=None, flags={"d": None})
    plt, fig = _figure(audit_figure, [bp, reps["audit_dfa"], c_flagged, no_base])
    try:
        axes = fig.axes
        c_bar = lambda row: to_hex(axes[3 * row + 1].patches[0].get_facecolor())
        d_bar = lambda row: to_hex(axes[3 * row + 2].patches[0].get_facecolor())
        assert c_bar(0) == OK and c_bar(2) == FLAG  # (c) in the flag colour when flagged
        assert d_bar(0) == OK and d_bar(1) == FLAG  # (d): DFA's headline bar is red
        d_texts = [t.get_text() for t in axes[3 * 3 + 2].texts]
        assert any("(d) skipped" in t for t in d_texts)  # no baseline: said in the panel, not a silent bar
        assert "0.7197" in [t.get_text() for t in axes[2].texts] and "0.5020" in [t.get_text() for t in axes[2].texts]
        assert "$" in axes[0].get_legend().get_texts()[0].get_text()
        _check_panels(fig)
        _no_overlaps(fig)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name", ["credit_dfa", "credit_toy", "relevance"])
def test_other_figures_have_no_empty_panels(name):
    from _shipped import shipped_reports
    from fadiag.render.plot import figure_of
    from fadiag.reports import from_dict

    rep = shipped_reports()[name]
    plt, fig = _figure(figure_of(from_dict(rep)), [rep])
    try:
        if name == "credit_toy":
            assert len(fig.axes) == 1  # one panel, not one drawn and one blank
        _check_panels(fig)
        _no_overlaps(fig)
        labels = [ax.get_ylabel() + ax.get_xlabel() + ax.get_title() for ax in fig.axes]
        assert not any("_l" in l and "$" not in l for l in labels), labels
    finally:
        plt.close(fig)


def test_flag_colour_states():
    from fadiag.render.plot import FLAG, OK, SKIP, flag_colour
    from fadiag.reports import Flag

    flag = lambda state: Flag("x", "x", state, None, None)
    assert (flag_colour(flag(True)), flag_colour(flag(False)), flag_colour(flag(None)),
            flag_colour(None)) == (FLAG, OK, SKIP, SKIP)
