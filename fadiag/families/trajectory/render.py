"""The trajectory report's table, markdown and plot (docs/trajectory.md). Formatting only: every number and
judgement is a field or a property of the report (fadiag.families.trajectory.report)."""

from __future__ import annotations

from .report import TRAJECTORY_SCHEMA


def _fired(p: dict) -> str:
    return " ".join(f["id"] for f in p.get("flags") or [] if f.get("flagged")) or "-"


def _last(v: list):
    return v[-1] if v else None


def step_rows(r) -> tuple:
    """(headers, rows of raw values): one row per step."""
    heads = ["step", "‖h_0‖", "growth", "‖g_L‖", "stability", "acc", "flags"]
    rows = [[p["step"], (p.get("residual_norms") or [None])[0], p.get("growth"), _last(p.get("bp_grad_norms") or []),
             p.get("cross_batch_stability"), p.get("headline_acc"), _fired(p)] for p in r.points]
    return heads, rows


def first_rows(r) -> list:
    """[id, name, step, layer, value, threshold] per flag (step "never" when it never fires)."""
    out = []
    for fid, hit in (r.first_flagged or {}).items():
        name = next((f.get("name") for p in r.points for f in p.get("flags") or [] if f["id"] == fid), fid)
        if hit is None:
            out.append([fid, name, "never", "", None, None])
        else:
            out.append([fid, name, hit["step"], "" if hit.get("layer") is None else hit["layer"], hit.get("value"),
                        hit.get("threshold")])
    return out


def trajectory_tables(r) -> list:
    from rich.text import Text

    from ...render.table import add_columns, fmt_acc, fmt_column, table, verdict_row

    d = r.data or {}
    parts = [Text(f"fadiag trajectory: {r.method_name}, {len(r.steps)} steps "
                  f"({r.steps[0] if r.steps else ''}..{r.steps[-1] if r.steps else ''}), "
                  f"{r.n_layers} layers, eval data {d.get('source')} ({d.get('batches')} x {d.get('batch_size')}); "
                  f"steps from {', '.join(r.step_sources)}", style="bold")]
    heads, rows = step_rows(r)
    t = table("per step (growth: (a)'s statistic; flags firing at the step)")
    add_columns(t, [(h, "num") for h in heads[:-1]] + [(heads[-1], "key")])
    cols = [fmt_column([row[k] for row in rows]) for k in (1, 2, 3, 4)]
    for i, row in enumerate(rows):
        t.add_row(str(row[0]), *(c[i] for c in cols), fmt_acc(row[5]), row[6])
    parts.append(t)
    f = table("first flagged (the step where each flag first fires, the layer where it started)")
    add_columns(f, (("id", "key"), ("check", "text"), ("first step", "num"), ("layer", "num"), ("value", "num"),
                    ("threshold", "num")))
    for fid, name, step, layer, v, th in first_rows(r):
        vv, tt = fmt_column([v, th])
        f.add_row(f"({fid})", name, str(step), str(layer), "" if v is None else vv, "" if th is None else tt)
    parts += [f, verdict_row(r)]
    return parts


def trajectory_form(r) -> str:
    from ...render.markdown import cell, head, num, table, verdict_line

    heads, rows = step_rows(r)
    parts = head(r)
    parts.append("## First flagged\n\n" + table(["id", "check", "first step", "layer", "value", "threshold"],
                                                [[f"({a})", cell(b), cell(c), cell(d), num(e) if e is not None else "",
                                                  num(f) if f is not None else ""] for a, b, c, d, e, f in first_rows(r)]))
    parts.append("## Per step\n\n" + table(heads, [[cell(x) if isinstance(x, (int, str)) else num(x) for x in row]
                                                  for row in rows]))
    parts.append(verdict_line(r))
    return "\n\n".join(parts) + "\n"


def trajectory_figure(plt, reports: list):
    """Per report: layers x steps heatmaps of log10 median ‖h_l‖ and ‖g_l‖; cells past a flag's per-layer
    criterion outlined, each flag's first step a dashed line with a star at the layer where it started."""
    import math

    fig, axes = plt.subplots(len(reports), 2, figsize=(12, 3.6 * len(reports)), squeeze=False)
    for row, r in zip(axes, reports):
        for ax, key, label, fids in ((row[0], "residual_norms", r"median $\Vert h_l \Vert$", ("a", "e", "f")),
                                     (row[1], "bp_grad_norms", r"median $\Vert g_l \Vert$", ("b", "c", "e"))):
            grid = [[math.log10(v) if isinstance(v, (int, float)) and v > 0 else math.nan for v in s]
                    for s in r.grid(key)]
            im = ax.imshow(list(map(list, zip(*grid))) if grid else [[math.nan]], aspect="auto", origin="lower",
                           cmap="viridis", interpolation="nearest")
            fig.colorbar(im, ax=ax, label=f"log10 {label}")
            for fid in fids[:1]:  # the panel's own flag: every cell past its per-layer criterion
                cells = r.past_cells(fid)
                if cells:
                    ax.scatter([i for i, _ in cells], [l for _, l in cells], marker="s", s=14, facecolors="none",
                               edgecolors="#d62728", linewidths=0.8,
                               label=f"({fid}) past its threshold")
            for k, (fid, hit) in enumerate((r.first_flagged or {}).items()):
                if hit is None or hit["step"] not in r.steps or not (fid in fids or hit.get("layer") is None):
                    continue
                x = r.steps.index(hit["step"])
                ax.axvline(x, color=f"C{k + 1}", ls="--", lw=1, label=f"({fid}) first at step {hit['step']}")
                if hit.get("layer") is not None:
                    ax.plot([x], [hit["layer"]], marker="*", ms=12, color=f"C{k + 1}", mec="black")
            ticks = list(range(0, len(r.steps), max(1, len(r.steps) // 10)))
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(r.steps[i]) for i in ticks], fontsize=7)
            ax.set_xlabel("training step")
            ax.set_ylabel("layer $l$")
            ax.set_title(f"{r.method_name}: {label}", fontsize=9)
            ax.legend(fontsize=6, loc="upper left", framealpha=0.8)
    fig.tight_layout()
    return fig


SECTIONS = {TRAJECTORY_SCHEMA: trajectory_form}

