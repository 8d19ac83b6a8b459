"""The relevance ``--plot`` figure (its record's "plot" form: fadiag.registry); the file handling and the
shared drawing helpers are fadiag.render.plot's."""

from __future__ import annotations

from ...render.plot import FLAG, NEUTRAL, OK, _nz


def relevance_figure(plt, reports: list):
    """Per head: weight relevance (path norm) per feature. With truth checks in the report, a head's title
    is green when its known features rank first by every check, red (the flag colour) when they do not."""
    r = reports[0]
    heads = list((r.per_head or {}).items())
    fn = r.feature_names or []
    fig, axes = plt.subplots(len(heads), 1, figsize=(max(6, 0.6 * len(fn) + 2), 2.4 * len(heads)), squeeze=False)
    for ax, (head, entry) in zip(axes[:, 0], heads):
        wr = entry.get("weight_relevance") or {}
        vals = [_nz(wr.get(f)) for f in fn]
        ax.bar(range(len(fn)), vals, color=NEUTRAL)
        first = r.known_first(head)
        colour = "black" if first is None else (OK if first else FLAG)
        ax.set_title(f"{head}: weight relevance (path norm)" + ("" if first is None else
                     "; known features rank first" if first else "; known features NOT first"),
                     fontsize=9, color=colour)
        ax.set_ylabel("relevance", fontsize=8)
        ax.set_xticks(range(len(fn)))
        ax.set_xticklabels(fn, rotation=45, ha="right", fontsize=7)
    axes[-1, 0].set_xlabel("input feature")
    fig.tight_layout()
    return fig
