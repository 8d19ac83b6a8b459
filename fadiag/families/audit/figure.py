"""The audit's ``--plot`` figure (its record's "plot" form: fadiag.registry): per checkpoint, (a)/(b) norms, (c)
stability and (d) accuracy; the file handling and the shared drawing helpers are fadiag.render.plot's."""

from __future__ import annotations

import textwrap

from ...render.plot import FLAG, NEUTRAL, OK, SKIP, _bar_labels, _label, _nz, flag_colour


def _audit_norms(ax, r) -> None:
    """(a) and (b): ‖h_l‖ and ‖g_l‖ per layer on a log scale, with the (a) ceiling and the (b) floor."""
    th = r.thresholds or {}
    hs = [_nz(v) for v in r.residual_norms or []]
    gs = [_nz(v) for v in r.bp_grad_norms or []]
    layers = list(range(len(hs)))
    ax.semilogy(layers, hs, "o-", color="C0", label=r"median $\Vert h_l \Vert$")
    ax.semilogy(layers, gs, "s-", color="C1", label=r"median $\Vert g_l \Vert$")
    if r.h_norm_ceiling is not None:
        ax.axhline(r.h_norm_ceiling, color="C0", ls="--", lw=1,
                   label=rf"(a) ceiling ${th['h_norm_explosion_ratio']:g} \cdot \Vert h_0 \Vert$")
    if th.get("g_norm_floor"):
        ax.axhline(th["g_norm_floor"], color="C1", ls="--", lw=1, label=f"(b) floor {th['g_norm_floor']:g}")
    ax.set_xlabel("layer $l$")
    ax.set_ylabel("per-sample L2 norm (log)")
    ax.set_xticks(layers)
    ax.set_title(textwrap.fill(f"{r.method_name}: {r.verdict}", 70), color=FLAG if r.flagged else OK, fontsize=9)
    ax.legend(fontsize=7, loc="best")


def _audit_stability(ax, r) -> None:
    """(c): the cross-batch cosine as one bar against its ceiling."""
    c = r.flag("c")
    st = _nz(r.cross_batch_stability)
    ceiling = (r.thresholds or {}).get("stability_drift_ceiling")
    ax.bar([0], [0.0 if st != st else st], color=flag_colour(c), width=0.5)
    if ceiling is not None:
        ax.axhline(ceiling, color="k", ls="--", lw=1, label=f"ceiling {ceiling:g}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlim(-1, 1)
    ax.set_xticks([0])
    ax.set_xticklabels([f"layer {r.stability_layer}"])
    ax.set_ylim(-1, 1)
    # the value in the corner, clear of the bar (|x| <= 0.25) and of the ceiling line
    ax.text(0.03, 0.97, f"value {_label(st)}", transform=ax.transAxes, ha="left", va="top", fontsize=8,
            color=flag_colour(c), fontweight="bold")
    ax.set_ylabel("mean pairwise cosine")
    ax.set_title("(c) cross-batch stability", fontsize=10)
    if ceiling is not None:
        ax.legend(fontsize=7, loc="lower right")


def _audit_accuracy(ax, r) -> None:
    """(d): the headline accuracy beside the frozen-random baseline, and the bar (d) asks for."""
    acc, base = _nz(r.headline_acc), r.frozen_baseline_acc
    names = ["headline", "frozen\nbaseline"]
    if base is None:
        bars = ax.bar(names[:1], [acc], color=NEUTRAL, width=0.6)
        _bar_labels(ax, bars, [acc], 1.0)
        ax.bar(names[1:], [0], width=0.6)  # the slot stays, empty, with the reason written in it
        ax.text(1, 0.5, "not given:\n(d) skipped", ha="center", va="center", fontsize=8, color=SKIP)
    else:
        bars = ax.bar(names, [acc, base], color=[flag_colour(r.flag("d")), SKIP], width=0.6)
        _bar_labels(ax, bars, [acc, base], 1.0)
        if r.frozen_acc_bar is not None:
            margin = r.thresholds["frozen_acc_margin_pp"]
            ax.axhline(r.frozen_acc_bar, color="k", ls="--", lw=1, label=f"baseline + {margin:g} pp")
            ax.legend(fontsize=7, loc="upper right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("accuracy")
    ax.set_title("(d) accuracy vs frozen-random blocks", fontsize=10)


def audit_figure(plt, reports: list):
    n = len(reports)
    fig, axes = plt.subplots(n, 3, figsize=(13, 3.8 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1, 1.3]})
    for row, r in zip(axes, reports):
        _audit_norms(row[0], r)
        _audit_stability(row[1], r)
        _audit_accuracy(row[2], r)
    fig.tight_layout()
    return fig
