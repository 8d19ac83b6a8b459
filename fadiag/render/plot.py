"""Pictures (the ``plot`` extra: matplotlib). Renderers of typed reports, like the text formats: no math, no
judgement (the (a) ceiling, the (d) bar, a head's truth check are properties of the report).

``plot_reports(reports, path)`` dispatches on the report schema. The file type follows the suffix
(.png, .svg, .pdf). Written atomically (temp file + rename).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

SUFFIXES = (".png", ".svg", ".pdf")


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("plotting needs matplotlib: pip install 'fadiag[plot]'", source="--plot") from None
    return plt


def _nz(v):
    return float("nan") if v is None else v


#: Colours by flag state, used by every figure (the edges heatmap's colormap is its own).
OK, FLAG, SKIP, NEUTRAL = "#2a9d58", "#d62728", "#9a9a9a", "#4c72b0"


def flag_colour(flag) -> str:
    """A Flag's colour: red when flagged, green when it passed, grey when skipped (or absent: None)."""
    return {True: FLAG, False: OK}.get(getattr(flag, "flagged", None), SKIP)


def _label(v) -> str:
    return "null" if v is None or v != v else f"{v:.3g}"


def _bar_labels(ax, bars, values, span: float, fmt: str = "{:.4f}") -> None:
    """Each bar's value inside it (white, centred) when the bar is tall enough to hold it, else just past
    its end; inside labels cannot collide with the threshold lines drawn above the bars."""
    for b, v in zip(bars, values):
        h = b.get_height()
        inside = abs(h) >= 0.12 * span
        y = b.get_y() + h / 2 if inside else h + (0.02 * span if h >= 0 else -0.02 * span)
        ax.text(b.get_x() + b.get_width() / 2, y, "null" if v != v else fmt.format(v), ha="center",
                va="center" if inside else ("bottom" if h >= 0 else "top"), fontsize=8,
                color="white" if inside else "black", fontweight="bold" if inside else "normal")


def figure_of(r):
    """The family's plot form (fadiag.registry), or None."""
    from ..registry import form

    return form(r.family, "plot")


def plot_reports(reports: list, path: str) -> None:
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise InputError(f"plot file must end in {', '.join(SUFFIXES)}", source=str(path))
    if not (p.parent if str(p.parent) else Path(".")).is_dir():
        raise InputError("plot folder does not exist", source=str(path))
    from . import as_report

    reports = [as_report(r) for r in reports]
    fn = figure_of(reports[0])
    if fn is None:
        raise InputError(f"no plot for {reports[0].schema}", source="--plot")
    plt = _plt()
    _save(plt, fn(plt, reports), p)


def _save(plt, fig, p: Path) -> None:
    """Save atomically: a temp file beside the target, then a rename."""
    from ..run.atomic import atomic_path

    try:
        with atomic_path(p, suffix=p.suffix) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def plot_matrix(W, report, path: str) -> None:
    """Heatmap of the N x N edge evidence (rows: source nodes' activations, columns: targets' gradients)."""
    from . import as_report

    report = as_report(report)
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise InputError(f"plot file must end in {', '.join(SUFFIXES)}", source=str(path))
    plt = _plt()
    import numpy as np

    M = W.detach().cpu().double().numpy()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    lim = float(np.nanmax(np.abs(M))) if np.isfinite(M).any() else 1.0
    im = ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=f"edge evidence ({(report.params or {}).get('method')} correlation)")
    true = [(e["source"], e["target"]) for e in report.top_edges or [] if e.get("true")]
    if true:
        ax.scatter([t for _, t in true], [s for s, _ in true], s=12, facecolors="none", edgecolors="k",
                   label="top edges that are true")
        ax.legend(fontsize=7, loc="upper right")
    sc = report.scoring
    title = f"{(report.params or {}).get('method')} evidence, N = {report.n_nodes}"
    if sc:
        title += f"; MRR {sc['mrr']:.3f} (random {sc['random_mrr']:.3f})"
    ax.set_title(title, fontsize=9, color=flag_colour(report.flag("mrr")) if sc else "black")
    ax.set_xlabel("target node j (gradient)")
    ax.set_ylabel("source node i (activation)")
    fig.tight_layout()
    _save(plt, fig, p)
