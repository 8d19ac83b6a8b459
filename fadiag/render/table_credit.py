"""Table view of ``fadiag credit``: every layer, ‖a_l‖ and ‖g_l‖ beside Γ_l, and both means."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .table import checks_table, fmt_num, register, verdict_text


def credit_tables(r: dict) -> list:
    ck = r.get("checkpoint") or {}
    layers = r.get("layers") or []
    t = Table(title=f"fadiag credit: {r.get('method_name')}  signal={r.get('signal')}  {ck.get('path', '')}",
              title_justify="left")
    if layers and "costate_cos_bp" in layers[0]:
        for c in ("layer", "costate cos (BP)", "costate cos (DFA)"):
            t.add_column(c, justify="right")
        for row in layers:
            t.add_row(str(row["layer"]), fmt_num(row["costate_cos_bp"]), fmt_num(row["costate_cos_dfa"]))
        means = r.get("means", {})
        summary = Text(f"mean over layers: BP {fmt_num(means['costate_cos_bp']['all_layers'])}, "
                       f"DFA {fmt_num(means['costate_cos_dfa']['all_layers'])}  (published: DFA 0.001, bridge ≈ 0.94)")
        return [t, summary, Text.assemble(("verdict: ", "bold"), verdict_text(r))]
    etas = list((layers[0].get("nudging") or {}).keys()) if layers else []
    has_r = any(row.get("bridge_residual") is not None for row in layers)
    cols = ["layer", "Γ_l", "‖a_l‖", "‖g_l‖ per sample", "‖g_l‖ mean CE", "ρ_l"] + [f"Δ_l (η={e})" for e in etas] + ["drift M_l"] + (
        ["bridge R_l"] if has_r else [])
    for c in cols:
        t.add_column(c, justify="right")
    for row in layers:
        g = fmt_num(row.get("gamma"))
        if row.get("gamma") is not None and row.get("gamma_interpretable") is False:
            g = Text(g + " (uninterp.)", style="yellow")
        t.add_row(str(row["layer"]), g, fmt_num(row.get("a_norm")), fmt_num(row.get("g_norm_per_sample")),
                  fmt_num(row.get("g_norm_mean_ce")), fmt_num(row.get("rho")),
                  *[fmt_num((row.get("nudging") or {}).get(e)) for e in etas], fmt_num(row.get("drift")),
                  *([fmt_num(row.get("bridge_residual"))] if has_r else []))
    m = Table(title="aggregates (mean over layers of per-layer batch means)", title_justify="left")
    for c in ("metric", "all layers (0..L)", "deep only (l ≥ 1)", "skipped"):
        m.add_column(c, justify="right" if c != "metric" else "left")
    for name, v in (r.get("means") or {}).items():
        m.add_row(name, fmt_num(v.get("all_layers")), fmt_num(v.get("deep_only")), str(v.get("n_skipped_all")))
    parts = [t, m, checks_table(r, "flags")]
    for k, why in (r.get("not_available") or {}).items():
        parts.append(Text(f"N/A {k}: {why}", style="yellow"))
    parts.append(Text.assemble(("verdict: ", "bold"), verdict_text(r),
                               f"\nsignal: {r.get('signal_source')}"))
    return parts


register("fadiag.credit/1", credit_tables)
