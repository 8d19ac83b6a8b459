"""Pictures (the ``plot`` extra: matplotlib). Renderers of report dicts, like the text formats: no math.

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


def audit_figure(plt, reports: list):
    n = len(reports)
    fig, axes = plt.subplots(n, 3, figsize=(13, 3.6 * n), squeeze=False)
    for row, r in zip(axes, reports):
        th = r.get("thresholds") or {}
        hs = [_nz(v) for v in r.get("residual_norms") or []]
        gs = [_nz(v) for v in r.get("bp_grad_norms") or []]
        layers = list(range(len(hs)))
        ax = row[0]
        ax.semilogy(layers, hs, "o-", label="median ‖h_l‖")
        ax.semilogy(layers, gs, "s-", label="median ‖g_l‖")
        if hs and th.get("h_norm_explosion_ratio") and r.get("growth_mode") == "ratio_to_h0":
            ax.axhline(hs[0] * th["h_norm_explosion_ratio"], color="C0", ls="--", lw=1,
                       label=f"(a) {th['h_norm_explosion_ratio']:g}·‖h_0‖")
        if th.get("g_norm_floor"):
            ax.axhline(th["g_norm_floor"], color="C1", ls="--", lw=1, label=f"(b) floor {th['g_norm_floor']:g}")
        ax.set_xlabel("layer l")
        ids = [f"({f['id']})" for f in r.get("flags") or [] if f.get("flagged")]
        short = "trustworthy" if not ids else "walk-back: " + " ".join(ids) + " flagged"
        ax.set_title(f"{r.get('method_name')}: {short}", color="green" if not ids else "red", fontsize=10)
        ax.legend(fontsize=7)
        ax = row[1]
        st = _nz(r.get("cross_batch_stability"))
        ax.bar(["(c) stability"], [st], color="C2")
        ax.axhline(th.get("stability_drift_ceiling", 0.3), color="k", ls="--", lw=1, label="ceiling")
        ax.set_ylim(-1, 1)
        ax.text(0, 0.05 if not st < 0 else -0.1, "null" if st != st else f"{st:.3g}", ha="center", fontsize=9)
        ax.set_title(f"cross-batch stability at layer {r.get('stability_layer')}")
        ax.legend(fontsize=7)
        ax = row[2]
        names, vals = ["headline"], [_nz(r.get("headline_acc"))]
        if r.get("frozen_baseline_acc") is not None:
            names.append("frozen baseline")
            vals.append(r["frozen_baseline_acc"])
        ax.bar(names, vals, color=["C0", "C7"][: len(vals)])
        ax.set_ylim(0, 1)
        ax.set_title("(d) accuracy vs frozen-random blocks")
    fig.tight_layout()
    return fig


FIGURES = {"fadiag.audit/1": audit_figure}


def register(schema: str, fn) -> None:
    FIGURES[schema] = fn


def plot_reports(reports: list, path: str) -> None:
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise InputError(f"plot file must end in {', '.join(SUFFIXES)}", source=str(path))
    if not (p.parent if str(p.parent) else Path(".")).is_dir():
        raise InputError("plot folder does not exist", source=str(path))
    schema = reports[0].get("schema")
    fn = FIGURES.get(schema)
    if fn is None:
        raise InputError(f"no plot for {schema}", source="--plot")
    plt = _plt()
    _save(plt, fn(plt, reports), p)


def _save(plt, fig, p: Path) -> None:
    """Save atomically: a temp file beside the target, then a rename."""
    from ..atomic import atomic_path

    try:
        with atomic_path(p, suffix=p.suffix) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def relevance_figure(plt, reports: list):
    r = reports[0]
    heads = list((r.get("per_head") or {}).items())
    fn = r.get("feature_names") or []
    fig, axes = plt.subplots(len(heads), 1, figsize=(max(6, 0.6 * len(fn) + 2), 2.2 * len(heads)), squeeze=False)
    truth = {}
    for ax, (head, entry) in zip(axes[:, 0], heads):
        wr = entry.get("weight_relevance") or {}
        vals = [_nz(wr.get(f)) for f in fn]
        ax.bar(range(len(fn)), vals, color="C0")
        ax.set_title(f"{head}: weight relevance (path norm)", fontsize=9)
        ax.set_xticks(range(len(fn)))
        ax.set_xticklabels(fn, rotation=45, ha="right", fontsize=7)
    fig.tight_layout()
    return fig


FIGURES["fadiag.relevance/1"] = relevance_figure


def plot_matrix(W, report: dict, path: str) -> None:
    """Heatmap of the N x N edge evidence (rows: source nodes' activations, columns: targets' gradients)."""
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise InputError(f"plot file must end in {', '.join(SUFFIXES)}", source=str(path))
    plt = _plt()
    import numpy as np

    M = W.detach().cpu().double().numpy()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    lim = float(np.nanmax(np.abs(M))) if np.isfinite(M).any() else 1.0
    im = ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="edge evidence")
    true = [(e["source"], e["target"]) for e in report.get("top_edges") or [] if e.get("true")]
    if true:
        ax.scatter([t for _, t in true], [s for s, _ in true], s=12, facecolors="none", edgecolors="k",
                   label="top edges that are true")
        ax.legend(fontsize=7, loc="upper right")
    sc = report.get("scoring")
    title = f"{report.get('params', {}).get('method')} evidence, N = {report.get('n_nodes')}"
    if sc:
        title += f"; MRR {sc['mrr']:.3f} (random {sc['random_mrr']:.3f})"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("target node j (gradient)")
    ax.set_ylabel("source node i (activation)")
    fig.tight_layout()
    _save(plt, fig, p)


def credit_figure(plt, reports: list):
    """Per layer: Γ_l and ρ_l (left), ‖a_l‖ and ‖g_l‖ on a log scale with the (b) floor (right)."""
    r = reports[0]
    layers = r.get("layers") or []
    ls = [row["layer"] for row in layers]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    if layers and "costate_cos_bp" in layers[0]:
        ax1.plot(ls, [_nz(x["costate_cos_bp"]) for x in layers], "o-", label="BP")
        ax1.plot(ls, [_nz(x["costate_cos_dfa"]) for x in layers], "s-", label="DFA")
        ax1.set_title("toy LQ: cosine with the exact costate λ_l", fontsize=9)
        ax1.axhline(0, color="k", lw=0.5)
        ax1.legend(fontsize=7)
        ax2.axis("off")
    else:
        ax1.plot(ls, [_nz(x.get("gamma")) for x in layers], "o-", label="Γ_l (offline BP cosine)")
        ax1.plot(ls, [_nz(x.get("rho")) for x in layers], "s-", label="ρ_l (perturbation correlation)")
        bad = [x["layer"] for x in layers if x.get("gamma_interpretable") is False]
        if bad:
            ax1.scatter(bad, [_nz(layers[l].get("gamma")) for l in bad], s=80, facecolors="none",
                        edgecolors="r", label="Γ uninterpretable (‖g‖ < floor)")
        ax1.axhline(0, color="k", lw=0.5)
        ax1.set_ylim(-1.05, 1.05)
        ax1.set_title(f"{r.get('method_name')}: signal={r.get('signal')}", fontsize=9)
        ax1.legend(fontsize=7)
        ax2.semilogy(ls, [_nz(x.get("a_norm")) for x in layers], "o-", label="median ‖a_l‖")
        ax2.semilogy(ls, [_nz(x.get("g_norm_per_sample")) for x in layers], "s-", label="median ‖g_l‖ per sample")
        ax2.semilogy(ls, [_nz(x.get("g_norm_mean_ce")) for x in layers], "^:", label="median ‖g_l‖ of the mean CE")
        floor = (r.get("thresholds") or {}).get("g_norm_floor")
        if floor:
            ax2.axhline(floor, color="C1", ls="--", lw=1, label=f"floor {floor:g}")
        ax2.set_title("signal and BP-gradient norms", fontsize=9)
        ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.set_xlabel("layer l")
    fig.tight_layout()
    return fig


FIGURES["fadiag.credit/1"] = credit_figure
