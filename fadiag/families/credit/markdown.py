"""``--format markdown`` for credit: the shared head (title, schema, verdict, checkpoint) and flags, the
per-layer values and their means as tables, then its remaining fields (fadiag.render.markdown.fields_table).
Formatting only: the numbers and the flags are the report's."""

from __future__ import annotations

from ...render.markdown import MISSING, code, fields_table, flags_section, head, records_table, table


def _credit_layers(r) -> str:
    layers = r.layers or []
    if layers and "costate_cos_bp" in layers[0]:
        return ("## Cosine with the exact costate λ_l per layer (toy linear-quadratic system)\n\n"
                + records_table(layers, ["layer", "costate_cos_bp", "costate_cos_dfa"],
                                ["layer l", "cos(a_l, λ_l), BP", "cos(a_l, λ_l), DFA"]))
    etas = list((layers[0].get("nudging") or {})) if layers else []
    rows = [{**x, **{f"Δ@{e}": (x.get("nudging") or {}).get(e) for e in etas},
             "readable": {True: "yes", False: "no"}.get(x.get("gamma_interpretable"), MISSING)} for x in layers]
    cols = ["layer", "gamma", "readable", "a_norm", "g_norm_per_sample", "g_norm_mean_ce", "rho",
            *[f"Δ@{e}" for e in etas], "drift", "bridge_residual"]
    heads = ["layer l", "Γ_l", "Γ_l readable", "‖a_l‖", "‖g_l‖ per sample", "‖g_l‖ mean CE", "ρ_l",
             *[f"Δ_l (η = {e})" for e in etas], "M_l (drift)", "R_l (bridge)"]
    return ("## Per-layer values\n\n"
            "Γ_l: offline BP cosine; ρ_l: perturbation correlation; Δ_l: nudging test (negative lowers the loss); "
            "M_l: feature drift; R_l: bridge residual (docs/science.md §2). Γ_l is unreadable where ‖g_l‖ of the "
            "mean CE is below the floor.\n\n" + records_table(rows, cols, heads))


def _credit_means(r) -> str:
    rows = [{"metric": k, **v, "skipped": f"{v.get('n_skipped_all')} / {v.get('n_skipped_deep')}"}
            for k, v in (r.means or {}).items()]
    return ("## Means over layers\n\nThe all-layer mean (l = 0..L) beside the deep-only mean (l ≥ 1), "
            "as REPORTING_TEMPLATE.md asks; skipped entries (null, non-finite) are counted.\n\n"
            + records_table(rows, ["metric", "all_layers", "deep_only", "n_layers", "skipped", "aggregation"],
                            ["metric", "all layers (l = 0..L)", "deep only (l ≥ 1)", "layers", "skipped (all / deep)",
                             "aggregation"]))


def credit_form(r) -> str:
    parts = head(r)
    parts.append(f"Signal: `{r.signal}`: {r.signal_source or MISSING}")
    parts += [_credit_layers(r), _credit_means(r)] + flags_section(r)
    if r.not_available:
        parts.append("## Not available\n\n" + table(["metric", "why"], [[k, v] for k, v in r.not_available.items()]))
    if r.drift_per_tensor:
        parts.append("## Feature drift per tensor\n\n"
                     + records_table([{"tensor": code(k), "drift": v} for k, v in r.drift_per_tensor.items()],
                                     ["tensor", "drift"], ["tensor", "‖W − W_init‖ / ‖W_init‖"]))
    parts += fields_table(r, skip={"method_name", "signal", "signal_source", "means", "not_available",
                                   "drift_per_tensor"})
    return "\n\n".join(parts) + "\n"
