"""``--format markdown`` for the families other than audit: credit, edges, relevance, compare, lint, inspect.

Each form opens with the shared head (title, schema, verdict, checkpoint) and flags, then the family's own
records as tables, then its remaining fields (markdown.fields_table). Formatting only: the numbers and the
flags are the report's.
"""

from __future__ import annotations

from .markdown import MISSING, code, fields_table, flags_section, head, num, records_table, table


# -------------------------------------------------------------------------------------------- credit

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


# --------------------------------------------------------------------------------------------- edges

def edges_form(r) -> str:
    parts = head(r) + flags_section(r)
    p = r.params or {}
    parts.append(f"N = {r.n_nodes} nodes, M = {r.n_observations} observations over "
                 f"{r.n_blocks} blocks; {p.get('method')} on {p.get('where')}-norm signals "
                 f"({p.get('norm')} / {p.get('agg')}).")
    sc = r.scoring
    if sc:
        parts.append(f"## Scoring against the truth\n\nTruth: {code(sc.get('truth'))}; queries: {sc.get('queries')}."
                     "\n\n" + records_table([sc], ["mrr", "random_mrr", "hits@1", "hits@3", "hits@10", "n_queries"],
                                            ["MRR", "random MRR", "Hits@1", "Hits@3", "Hits@10", "queries"]))
    te = r.top_edges or []
    if te:
        rows = [{**e, "known": "yes" if e.get("known") else "no",
                 "true": MISSING if e.get("true") is None else ("yes" if e["true"] else "no")} for e in te]
        parts.append(f"## Top {len(te)} edges\n\n" + records_table(rows, ["rank", "source", "target", "score", "known",
                                                                            "true"]))
    parts += fields_table(r, skip={"method_name", "scoring", "top_edges", "n_nodes", "n_observations", "n_blocks"})
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------- relevance

_REL = [("weight_relevance", "weight relevance"), ("normalized_weight_relevance", "× std (reference's)"),
        ("per_raw_unit_relevance", "per raw unit")]


def _relevance_head(r, head_name: str, e: dict) -> str:
    """One head's features: the relevance columns it has, then sensitivity and the Jacobian when measured."""
    sens = r.sensitivity or {}
    mean_abs, jac = sens.get("mean_abs") or {}, (sens.get("observation") or {}).get("jacobian") or {}
    cols = [(k, h) for k, h in _REL if k in e]
    src = {k: e[k] for k, _ in cols}
    if mean_abs:
        cols.append(("mean_abs", f"mean |∂pred/∂x| over {sens.get('over')}"))
        src["mean_abs"] = mean_abs.get(head_name) or {}
    if jac:
        cols.append(("jacobian", "∂pred/∂x at the observation"))
        src["jacobian"] = jac.get(head_name) or {}
    rows = [{"feature": f, **{k: src[k].get(f) for k, _ in cols}} for f in r.feature_names or []]
    return f"## Head `{head_name}`\n\n" + records_table(rows, ["feature", *[k for k, _ in cols]],
                                                        ["feature", *[h for _, h in cols]])


def _relevance_heads_summary(per_head: dict) -> list:
    heads = list(per_head)
    parts = []
    neurons = list(next(iter(per_head.values())).get("head_reliance") or {})
    if neurons:
        rows = [{"neuron": n, **{h: (per_head[h].get("head_reliance") or {}).get(n) for h in heads}} for n in neurons]
        parts.append("## Head reliance |w_h| per last-layer neuron\n\n" + records_table(rows, ["neuron", *heads]))
    if any("mean_step_size" in per_head[h] for h in heads):
        parts.append("## Mean step size per head\n\n"
                     + records_table([{"head": h, "mean_step_size": per_head[h].get("mean_step_size")} for h in heads]))
    return parts


def relevance_form(r) -> str:
    parts = head(r) + flags_section(r)
    fn = r.feature_names or []
    trunk = r.trunk or {}
    if trunk:
        parts.append("## Trunk (input layer) and normaliser\n\n"
                     + records_table([{"feature": f, **{c: trunk[c].get(f) for c in trunk}} for f in fn],
                                     ["feature", *trunk]))
    obs = (r.sensitivity or {}).get("observation") or {}
    if obs:
        parts.append("## Observation\n\nThe point the Jacobian is taken at:\n\n"
                     + table(["feature", "x"], [[f, num(x)] for f, x in zip(fn, obs.get("x") or [])]))
    per_head = r.per_head or {}
    parts += [_relevance_head(r, h, e) for h, e in per_head.items()]
    if per_head:
        parts += _relevance_heads_summary(per_head)
    parts += fields_table(r, skip={"method_name", "trunk", "per_head", "sensitivity", "feature_names", "head_names"})
    return "\n\n".join(parts) + "\n"
