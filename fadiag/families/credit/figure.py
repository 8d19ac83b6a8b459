"""The credit ``--plot`` figure (its record's "plot" form: fadiag.registry); the file handling and the shared
drawing helpers are fadiag.render.plot's."""

from __future__ import annotations

from ...render.plot import FLAG, _nz


def credit_figure(plt, reports: list):
    """Per layer: Γ_l and ρ_l (left), ‖a_l‖ and ‖g_l‖ on a log scale with the (b) floor (right); the toy
    LQ check is one panel (its costate cosines), never a panel left empty."""
    r = reports[0]
    layers = r.layers or []
    ls = [row["layer"] for row in layers]
    if layers and "costate_cos_bp" in layers[0]:
        fig, ax1 = plt.subplots(1, 1, figsize=(6.5, 3.8))
        ax1.plot(ls, [_nz(x["costate_cos_bp"]) for x in layers], "o-", label="BP")
        ax1.plot(ls, [_nz(x["costate_cos_dfa"]) for x in layers], "s-", label="DFA")
        ax1.set_title(r"toy LQ: cosine with the exact costate $\lambda_l$", fontsize=9)
        ax1.set_ylabel(r"$\cos(a_l, \lambda_l)$")
        ax1.axhline(0, color="k", lw=0.5)
        ax1.set_ylim(-1.05, 1.05)
        ax1.legend(fontsize=7)
        axes = (ax1,)
    else:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
        ax1.plot(ls, [_nz(x.get("gamma")) for x in layers], "o-", label=r"$\Gamma_l$ (offline BP cosine)")
        ax1.plot(ls, [_nz(x.get("rho")) for x in layers], "s-", label=r"$\rho_l$ (perturbation correlation)")
        bad = [x["layer"] for x in layers if x.get("gamma_interpretable") is False]
        if bad:
            ax1.scatter(bad, [_nz(layers[l].get("gamma")) for l in bad], s=80, facecolors="none",
                        edgecolors=FLAG, label=r"$\Gamma_l$ unreadable ($\Vert g_l \Vert$ < floor)")
        ax1.axhline(0, color="k", lw=0.5)
        ax1.set_ylim(-1.05, 1.05)
        ax1.set_ylabel("cosine / correlation")
        ax1.set_title(f"{r.method_name}: signal={r.signal}", fontsize=9)
        ax1.legend(fontsize=7)
        ax2.semilogy(ls, [_nz(x.get("a_norm")) for x in layers], "o-", label=r"median $\Vert a_l \Vert$")
        ax2.semilogy(ls, [_nz(x.get("g_norm_per_sample")) for x in layers], "s-",
                     label=r"median $\Vert g_l \Vert$ per sample")
        ax2.semilogy(ls, [_nz(x.get("g_norm_mean_ce")) for x in layers], "^:",
                     label=r"median $\Vert g_l \Vert$ of the mean CE")
        floor = (r.thresholds or {}).get("g_norm_floor")
        if floor:
            ax2.axhline(floor, color="C1", ls="--", lw=1, label=f"floor {floor:g}")
        ax2.set_ylabel("per-sample L2 norm (log)")
        ax2.set_title("signal and BP-gradient norms", fontsize=9)
        ax2.legend(fontsize=7)
        axes = (ax1, ax2)
    for ax in axes:
        ax.set_xlabel("layer $l$")
        ax.set_xticks(ls)
    fig.tight_layout()
    return fig
