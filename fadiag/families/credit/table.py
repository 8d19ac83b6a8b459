"""Table view of ``fadiag credit``: every layer, ‖a_l‖ and ‖g_l‖ beside Γ_l, and both means.

Two per-layer tables, so each fits an 80-column terminal: alignment with backprop (Γ_l and the norms
that say whether it can be read), then the loss-based metrics (ρ_l, Δ_l per η, M_l, R_l)."""

from __future__ import annotations

from rich.text import Text

from ...render.table import add_columns, checks_table, fmt_column, table, verdict_row


def _columns(t, rows: list, cols: list, marks=None) -> None:
    """cols: (header, getter), each column of numbers formatted one way (fmt_column); ``marks``: one more
    (header, getter -> Text) column."""
    add_columns(t, [(h, "num") for h, _ in cols] + ([(marks[0], "key")] if marks else []))
    cells = [fmt_column([get(row) for row in rows]) for _, get in cols]
    if marks:
        cells.append([marks[1](row) for row in rows])
    for i in range(len(rows)):
        t.add_row(*[c[i] for c in cells])


def _layer(row):
    return row["layer"]


def _readable(row) -> Text:
    ok = row.get("gamma_interpretable")
    return Text("no", style="yellow") if ok is False else Text("yes" if ok else "n/a")


def credit_tables(r) -> list:
    ck = r.checkpoint or {}
    layers = r.layers or []
    means = r.means or {}
    head = f"fadiag credit: {r.method_name}  signal={r.signal}  {ck.get('path', '')}".rstrip()
    if layers and "costate_cos_bp" in layers[0]:
        t = table("cosine with the exact costate λ_l")
        _columns(t, layers, [("layer", _layer), ("costate cos (BP)", lambda x: x["costate_cos_bp"]),
                             ("costate cos (DFA)", lambda x: x["costate_cos_dfa"])])
        bp, dfa = (fmt_column([means[k]["all_layers"]])[0] for k in ("costate_cos_bp", "costate_cos_dfa"))
        summary = Text(f"mean over layers: BP {bp}, DFA {dfa}  (published: DFA 0.001, bridge ≈ 0.94)")
        return [Text(head, style="bold"), t, summary, verdict_row(r)]

    t1 = table("alignment with backprop (Γ_l is unreadable where ‖g_l‖ mean CE < the floor)")
    _columns(t1, layers, [("layer", _layer), ("Γ_l", lambda x: x.get("gamma")), ("‖a_l‖", lambda x: x.get("a_norm")),
                          ("‖g_l‖ per sample", lambda x: x.get("g_norm_per_sample")),
                          ("‖g_l‖ mean CE", lambda x: x.get("g_norm_mean_ce"))],
             marks=("Γ readable", _readable))

    etas = list((layers[0].get("nudging") or {}).keys()) if layers else []
    has_r = any(row.get("bridge_residual") is not None for row in layers)
    nudge = [(f"Δ_l η={e}", lambda x, e=e: (x.get("nudging") or {}).get(e)) for e in etas]
    cols = [("layer", _layer), ("ρ_l", lambda x: x.get("rho"))] + (nudge if len(etas) == 1 else [])
    cols += [("drift M_l", lambda x: x.get("drift"))]
    cols += [("bridge R_l", lambda x: x.get("bridge_residual"))] if has_r else []
    t2 = table("effect on the loss, and drift")
    _columns(t2, layers, cols)
    tables = [t2]
    for i in range(0, len(etas) if len(etas) > 1 else 0, 5):  # several η: their own table(s), 5 to a table
        t3 = table("nudging test Δ_l (negative: the credit lowers the loss)")
        _columns(t3, layers, [("layer", _layer)] + nudge[i:i + 5])
        tables.append(t3)

    m = table("means over layers (of per-layer batch means; skipped: all/deep)")
    add_columns(m, (("metric", "key"), ("all layers 0..L", "num"), ("deep only l ≥ 1", "num"),
                    ("skipped", "num")))
    names = list(means)
    alls = fmt_column([means[k].get("all_layers") for k in names])
    deeps = fmt_column([means[k].get("deep_only") for k in names])
    for k, a, d in zip(names, alls, deeps):
        m.add_row(k, a, d, f"{means[k].get('n_skipped_all')}/{means[k].get('n_skipped_deep')}")
    parts = [Text(head, style="bold"), t1, *tables, m, checks_table(r, "flags")]
    for k, why in (r.not_available or {}).items():
        parts.append(Text(f"N/A {k}: {why}", style="yellow"))
    read = (getattr(r, "stream", None) or {}).get("read_as")
    if read:  # every inference fadiag made about the model (fadiag.stream.readings)
        parts.append(Text.assemble(("read as: ", "bold"), read))
    parts.append(verdict_row(r, f"\nsignal: {r.signal_source}"))
    return parts
