"""Table view of ``fadiag relevance``: per head, features ranked by weight relevance (and sensitivity,
and the Jacobian at the observation when there is one)."""

from __future__ import annotations

from rich.text import Text

from ...render.table import add_columns, checks_table, fmt_column, table, verdict_row

#: trunk field -> short column header (the JSON names are in docs/science.md §4)
_TRUNK = {"step_size_activity": "step size", "trace_activity": "trace", "normalizer_mean": "mean",
          "normalizer_std": "std"}


def relevance_tables(r, top: int = 12) -> list:
    parts = [Text(f"fadiag relevance: {(r.checkpoint or {}).get('path')}", style="bold")]
    fn = r.feature_names or []
    trunk = r.trunk or {}
    if trunk:
        t = table("trunk: input-layer activity, normaliser")
        cols = list(trunk)
        add_columns(t, [("feature", "text")] + [(_TRUNK.get(c, c), "num") for c in cols])
        cells = [fmt_column([trunk[c].get(f) for f in fn]) for c in cols]
        for i, f in enumerate(fn):
            t.add_row(f, *[c[i] for c in cells])
        parts.append(t)
    sens = r.sensitivity or {}
    mean_abs = sens.get("mean_abs") or {}
    jac = (sens.get("observation") or {}).get("jacobian") or {}
    for head, entry in (r.per_head or {}).items():
        wr = entry.get("weight_relevance") or {}
        ranked = sorted(wr, key=lambda f: -(wr[f] if wr[f] is not None else float("-inf")))[:top]
        t = table(f"head {head}: features by weight relevance (path norm)")
        cols = [("weight relevance", wr)]
        if "per_raw_unit_relevance" in entry:
            cols.append(("per raw unit", entry["per_raw_unit_relevance"]))
        if mean_abs:
            cols.append(("mean |∂pred/∂x|", mean_abs.get(head, {})))
        if jac:
            cols.append(("∂pred/∂x at obs.", jac.get(head, {})))
        add_columns(t, [("rank", "num"), ("feature", "text")] + [(h, "num") for h, _ in cols])
        cells = [fmt_column([d.get(f) for f in ranked]) for _, d in cols]
        for i, f in enumerate(ranked):
            t.add_row(str(i + 1), f, *[c[i] for c in cells])
        parts.append(t)
    if jac:
        parts.append(Text(f"Jacobian at the observation over {len(fn)} features; mean |∂pred/∂x| over "
                          f"{sens.get('over')}", style="dim"))
    parts.append(checks_table(r))
    parts.append(verdict_row(r, f"   step sizes: {r.step_size_kind or 'absent'}"))
    return parts
