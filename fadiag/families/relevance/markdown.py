"""``--format markdown`` for relevance: the shared head and flags, each head's features as a table, then its
remaining fields. Formatting only: the numbers and the flags are the report's."""

from __future__ import annotations

from ...render.markdown import fields_table, flags_section, head, num, records_table, table


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
