"""``--format markdown``: the per-method reporting form of REPORTING_TEMPLATE.md, filled from a report.

Audit reports ("fadiag.audit/1") fill the form section by section, with the template's ``## `` headings
in the template's order; what fadiag cannot know (training recipe, seeds, compute, the paper's own
aggregation) stays a marked blank ``_(fill in: ...)_``. Reports of other families get a generic section:
title, verdict, flags table, per-layer table when the report has ``layers``, then its other scalar fields.
Several reports are separated by ``---``.

Renderers never compute: every number printed here is a field of the report dict; the only logic is
formatting and comparing a value with the threshold the report itself records. Non-finite numbers are
null in the JSON form and print as ``null``; a field the report does not carry prints as ``n/a``.
"""

from __future__ import annotations

import math

from .table import entry_value, flag_cells, fmt_column, fmt_num, plain

AUDIT = "fadiag.audit/1"
MISSING = "n/a"


def fill_in(what: str) -> str:
    return f"_(fill in: {what})_"


def num(v) -> str:
    """A number as the table view prints it; None and non-finite floats (a raw dict) print ``null``."""
    if isinstance(v, float) and not math.isfinite(v):
        return "null"
    return fmt_num(v)


def cell(v) -> str:
    """One table cell: ``|`` escaped, line breaks folded, so a value can never break the table."""
    s = v if isinstance(v, str) else num(v)
    return " ".join(s.replace("|", "\\|").split())


def code(s) -> str:
    s = str(s)
    return f"`{s}`" if s and "`" not in s and "\n" not in s else s


def table(headers: list, rows: list) -> str:
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def status(flagged) -> str:
    if flagged is None:
        return "skipped"
    return "**FLAG**" if flagged else "ok"


def flag_id(f: dict) -> str:
    """The protocol's letters as the paper writes them, "(a)"; named checks as they are."""
    i = str(f.get("id", "?"))
    return f"({i})" if len(i) == 1 else i


def flags_table(flags: list) -> str:
    """Value and threshold columns formatted as the table view does (flag_cells: one format per column)."""
    return table(["id", "diagnostic", "value", "threshold", "status", "detail"],
                 [[flag_id(f), f.get("name") or "", v, t, status(f.get("flagged")), f.get("detail") or ""]
                  for f, (v, t) in zip(flags, flag_cells(flags))])


def verdict_line(r: dict) -> str:
    return f"**{r['verdict']}**" if r.get("verdict") else MISSING


def family(r: dict) -> str:
    """"fadiag.credit/1" -> "credit"."""
    return str(r.get("schema") or "fadiag.report").split("/")[0].removeprefix("fadiag.")


def get(d: dict, key: str):
    return num(d[key]) if key in d else MISSING


# --------------------------------------------------------------------------------------------- audit

_ACC_SOURCES = {
    "spec": "taken from the spec (audit.headline_acc), not measured by fadiag",
    "given": "given on the command line (--headline-acc), not measured by fadiag",
}
_BASELINE_SOURCES = {
    "spec": "taken from the spec (audit.frozen_baseline_acc), not measured in this run",
    "given": "given on the command line (--frozen-baseline-acc), not measured in this run",
}


def _acc_how(r: dict) -> str:
    src = r.get("headline_acc_source")
    data = r.get("data") or {}
    if src == "computed":
        return (f"computed by fadiag: top-1 accuracy pooled over all eval samples "
                f"({get(data, 'batches')} batches × {get(data, 'batch_size')} rows)")
    return _ACC_SOURCES.get(src, str(src) if src else MISSING)


def _baseline_how(r: dict) -> str:
    src = r.get("frozen_baseline_source")
    if r.get("frozen_baseline_acc") is None and not src:
        return "unknown: no baseline given, so (d) is skipped (give --frozen-baseline-acc or --frozen-baseline train)"
    if src and src.startswith("trained"):
        return f"trained by fadiag in this run ({plain(src)})"
    return _BASELINE_SOURCES.get(src, str(src) if src else MISSING)


def _flag(r: dict, fid: str) -> dict:
    return next((f for f in r.get("flags") or [] if f.get("id") == fid), {})


def _low_g_layers(r: dict) -> tuple[list, list]:
    """Layers whose ‖g_l‖ is below the report's own (b) floor, and those that are null."""
    floor = (r.get("thresholds") or {}).get("g_norm_floor")
    g = r.get("bp_grad_norms") or []
    null = [i for i, v in enumerate(g) if v is None or (isinstance(v, float) and not math.isfinite(v))]
    low = [i for i, v in enumerate(g) if i not in null and floor is not None and v < floor]
    return low, null


def _identification(r: dict) -> str:
    ck = r.get("checkpoint") or {}
    data = r.get("data") or {}
    trusted = ck.get("trusted")
    safe = (MISSING if trusted is None else
            "NO: loaded with --trust-checkpoint (arbitrary unpickling)" if trusted else "yes")
    rows = [
        ["method name", r.get("method_name") or MISSING],
        ["checkpoint path", code(ck["path"]) if ck.get("path") else MISSING],
        ["checkpoint sha256", code(ck["sha256"]) if ck.get("sha256") else MISSING],
        ["checkpoint format", ck.get("format") or MISSING],
        ["read without unpickling", safe],
        ["model spec", code(r["spec"]) if r.get("spec") else MISSING],
        ["eval data source", code(data["source"]) if data.get("source") else MISSING],
        ["eval batches × batch size", f"{get(data, 'batches')} × {get(data, 'batch_size')}"],
        ["data seed", get(data, "seed")],
        ["fadiag version", r.get("fadiag_version") or MISSING],
        ["notes", r.get("notes") or "none"],
        ["training recipe", fill_in("optimiser, learning rate and schedule, epochs, batch size, weight decay")],
        ["number of seeds", fill_in("how many independent training seeds; this form covers one checkpoint")],
        ["compute", fill_in("hardware and wall-clock time per training run")],
    ]
    return "## 1. Identification\n\n" + table(["field", "value"], rows)


def _headline(r: dict) -> str:
    d = _flag(r, "d")
    margin = num(d.get("value")) if d else MISSING
    if d and d.get("flagged") is None:
        margin += " (skipped)"
    rows = [
        ["headline accuracy", num(r.get("headline_acc")), _acc_how(r)],
        ["frozen-blocks baseline accuracy", num(r.get("frozen_baseline_acc")), _baseline_how(r)],
        ["margin over the baseline (pp)", margin, "headline minus baseline, in percentage points (diagnostic (d))"],
        ["across seeds", fill_in("e.g. mean ± std over N seeds"),
         fill_in("which statistic the paper reports, and over which seeds")],
        ["gradient-alignment headline (Γ), if claimed", fill_in("value or \"not claimed\""),
         fill_in("which layers, which mean; see section 5")],
    ]
    return ("## 2. Headline numbers and how they were aggregated\n\n"
            + table(["quantity", "value", "how it was obtained and aggregated"], rows))


def _diagnostics(r: dict) -> str:
    h = r.get("residual_norms") or []
    g = r.get("bp_grad_norms") or []
    l_star = r.get("stability_layer")
    low, null = _low_g_layers(r)
    rows = []
    n = max(len(h), len(g))
    hcol = fmt_column([h[i] if i < len(h) else None for i in range(n)])
    gcol = fmt_column([g[i] if i < len(g) else None for i in range(n)])
    for i in range(n):
        hv = h[i] if i < len(h) else None
        gv = g[i] if i < len(g) else None
        notes = []
        if i == l_star:
            notes.append("stability layer l*")
        if i in low:
            notes.append("‖g_l‖ below floor")
        if i in null or hv is None or (isinstance(hv, float) and not math.isfinite(hv)):
            notes.append("non-finite")
        rows.append([str(i), hcol[i], gcol[i], ", ".join(notes)])
    th = r.get("thresholds") or {}
    settings = ", ".join(f"{k} = {num(v)}" for k, v in th.items()) or MISSING
    out = ["## 3. The four diagnostics", "",
           "Per-layer values, measured on the first eval batch (median over samples of the per-sample L2 norm):",
           "", table(["layer l", "‖h_l‖", "‖g_l‖", "note"], rows), "", "Flags:", "",
           flags_table(r.get("flags") or []), "",
           f"Thresholds: {settings}. (a) growth mode: {r.get('growth_mode') or MISSING}; "
           f"(c) stability layer l* = {num(l_star) if l_star is not None else MISSING}."]
    return "\n".join(out)


def _verdict(r: dict) -> str:
    flagged = any(f.get("flagged") for f in r.get("flags") or [])
    walk = (fill_in("which claims of the paper change given the flags above, and how") if flagged
            else "none needed (nothing flagged)")
    return f"## 4. Verdict\n\n{verdict_line(r)}\n\nWalk-back: {walk}"


def _credit_blank() -> str:
    return ("## 5. Credit metrics per layer\n\n"
            + fill_in("not measured by `fadiag audit`; paste the per-layer table of "
                      "`fadiag credit CKPT --format markdown` (Γ_l, ‖a_l‖, ‖g_l‖, ρ_l, Δ_l, R_l, M_l per layer, "
                      "with the all-layer mean, the deep-only mean (l ≥ 1) and the aggregation named), "
                      "or write \"not reported\""))


def _pitfalls(r: dict) -> str:
    th = r.get("thresholds") or {}
    low, null = _low_g_layers(r)
    floor = th.get("g_norm_floor")
    if low or null:
        parts = []
        if low:
            parts.append(f"‖g_l‖ is below the (b) floor {num(floor)} at layers {', '.join(map(str, low))}")
        if null:
            parts.append(f"‖g_l‖ is non-finite at layers {', '.join(map(str, null))}")
        p2 = "; ".join(parts) + ": a Γ_l there is uninterpretable (cosine eps clamp)."
    elif floor is not None and r.get("bp_grad_norms"):
        p2 = f"‖g_l‖ ≥ the (b) floor {num(floor)} at every layer."
    else:
        p2 = MISSING
    p2 += " Paper's cosines: " + fill_in("computed by hand in float64, or with F.cosine_similarity?")
    dtypes = r.get("weight_dtypes")
    p3 = f"checkpoint weight dtypes: {', '.join(dtypes) if dtypes else MISSING}."
    if dtypes and any(str(t).endswith("float16") and not str(t).endswith("bfloat16") for t in dtypes):
        p3 += " **float16 weights: BP gradients near 5e-10 underflow to zero; read (b) and any Γ with care.**"
    p3 += " fadiag reduces norms and cosines in float64."
    ck = r.get("checkpoint") or {}
    trusted = ck.get("trusted")
    safe = (MISSING if trusted is None else
            "**NO**: loaded with --trust-checkpoint (arbitrary unpickling ran code from the file)" if trusted
            else "yes: read without unpickling (torch weights_only, safetensors or npz)")
    nf = r.get("nonfinite_count")
    nonfinite = (MISSING if "nonfinite_count" not in r else
                 f"{num(nf)} in weights, activations and gradients" + (" (flagged)" if nf else ""))
    rows = [
        ["1", "`x.norm(-1)` is not the per-row L2 norm",
         "fadiag: every norm here is the per-sample L2 norm along the feature dimension (x.norm(dim=-1)). "
         "Paper's code: " + fill_in("how its norms were computed")],
        ["2", "`F.cosine_similarity` clamps tiny ‖g‖", p2],
        ["3", "fp16 underflows small BP gradients", p3],
        ["4", "feedback-matrix specificity",
         fill_in("were the exact training-time B_l saved and used? `fadiag audit` does not use them")],
        ["5", "aggregation of per-layer values",
         f"headline accuracy: {_acc_how(r)}. Γ and other per-layer headlines: " + fill_in("the aggregation")],
        ["6", "layer-0 dominance", fill_in("deep-only mean beside the all-layer mean, from section 5")],
        ["6.5", "auxiliary nets not saved",
         fill_in("were B_l / value nets saved? Missing inputs must read N/A, never a fallback value")],
        ["–", "checkpoint read safely", safe],
        ["–", "non-finite values", nonfinite],
    ]
    return "## 6. Pitfall disclosures\n\n" + table(["#", "pitfall (docs/science.md §2)", "disclosure"], rows)


def audit_form(r: dict) -> str:
    ck = r.get("checkpoint") or {}
    title = r.get("method_name") or MISSING
    head = f"# fadiag audit: {title}" + (f" ({code(ck['path'])})" if ck.get("path") else "")
    intro = ("Reporting form of REPORTING_TEMPLATE.md, filled by fadiag from a "
             f"`{r.get('schema', AUDIT)}` report. Replace every _(fill in: ...)_ or write \"not reported\".")
    parts = [head, intro, f"Verdict: {verdict_line(r)}", _identification(r), _headline(r), _diagnostics(r),
             _verdict(r), _credit_blank(), _pitfalls(r)]
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------- generic

def _scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def flat(v) -> str:
    """Any value as the text of one cell, never a Python repr: lists comma-separated, dicts as
    ``key value`` pairs separated by ``;``."""
    if _scalar(v):
        return num(v)
    if isinstance(v, dict):
        return "; ".join(f"{k} {flat(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ("; " if any(isinstance(x, (dict, list, tuple)) for x in v) else ", ").join(flat(x) for x in v)
    return str(v)


def columns(rows: list, cols: list) -> list:
    """Cells of ``rows`` (dicts) for ``cols``, every column of numbers formatted one way (fmt_column)."""
    cells = []
    for c in cols:
        vals = [row.get(c) if c in row else MISSING for row in rows]
        if all(v is None or v == MISSING or (isinstance(v, (int, float)) and not isinstance(v, bool))
               for v in vals):
            f = iter(fmt_column([v for v in vals if v != MISSING]))
            cells.append([MISSING if v == MISSING else next(f) for v in vals])
        else:
            cells.append([flat(v) for v in vals])
    return [list(r) for r in zip(*cells)] if cells else []


def records_table(rows: list, cols: list | None = None, headers: list | None = None) -> str:
    """A list of dicts as one table: a column per key (the union, in first-seen order)."""
    if cols is None:
        cols = []
        for row in rows:
            cols += [k for k in row if k not in cols]
    return table(headers or cols, columns(rows, cols))


def _identification_generic(r: dict) -> str | None:
    ck = r.get("checkpoint")
    if not isinstance(ck, dict) or not ck:
        return None
    rows = [[k, code(v) if k in ("path", "sha256") and v else num(v)] for k, v in ck.items() if _scalar(v)]
    return "## Checkpoint\n\n" + table(["field", "value"], rows)


def _layers_table(layers: list) -> str:
    cols = []
    for row in layers:
        for k, v in row.items():
            if k not in cols and _scalar(v):
                cols.append(k)
    if "layer" in cols:
        cols.remove("layer")
        cols.insert(0, "layer")
    return "## Per-layer values\n\n" + records_table(layers, cols)


_SKIP = {"schema", "verdict", "flags", "checkpoint", "layers"}


def _structured(k: str, v) -> str | None:
    """A list of records or a dict of records as its own section; None for anything flatter."""
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return f"## {k}\n\n" + records_table(v)
    if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
        rows = [{"name": kk, **{ik: iv for ik, iv in vv.items()}} for kk, vv in v.items()]
        return f"## {k}\n\n" + records_table(rows)
    return None


def _fields_table(r: dict, skip=()) -> list:
    """The report's other fields: records as their own tables, the rest as ``field | value`` rows."""
    rows, sections = [], []
    for k, v in r.items():
        if k in _SKIP or k in skip:
            continue
        sec = _structured(k, v)
        if sec:
            sections.append(sec)
        elif isinstance(v, dict) and v:
            for kk, vv in v.items():
                sub = _structured(f"{k}.{kk}", vv)
                sections.append(sub) if sub else rows.append([f"{k}.{kk}", flat(vv)])
        else:
            rows.append([k, flat(v)])
    return (["## Other fields\n\n" + table(["field", "value"], rows)] if rows else []) + sections


def _head(r: dict) -> list:
    ck = r.get("checkpoint") or {}
    subject = r.get("method_name") or ck.get("path") or ""
    head = f"# fadiag {family(r)}" + (f": {subject}" if subject else "")
    parts = [head, f"Schema: `{r.get('schema', MISSING)}`. Verdict: {verdict_line(r)}"]
    ident = _identification_generic(r)
    return parts + ([ident] if ident else [])


def _flags_section(r: dict) -> list:
    return ["## Flags\n\n" + flags_table(r["flags"])] if r.get("flags") else []


def generic_section(r: dict) -> str:
    parts = _head(r) + _flags_section(r)
    layers = r.get("layers")
    if isinstance(layers, list) and layers and all(isinstance(x, dict) for x in layers):
        parts.append(_layers_table(layers))
    parts += _fields_table(r)
    return "\n\n".join(parts) + "\n"


# -------------------------------------------------------------------------------------------- credit

def _credit_layers(r: dict) -> str:
    layers = r.get("layers") or []
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


def _credit_means(r: dict) -> str:
    means = r.get("means") or {}
    rows = [{"metric": k, **v, "skipped": f"{v.get('n_skipped_all')} / {v.get('n_skipped_deep')}"}
            for k, v in means.items()]
    return ("## Means over layers\n\nThe all-layer mean (l = 0..L) beside the deep-only mean (l ≥ 1), "
            "as REPORTING_TEMPLATE.md asks; skipped entries (null, non-finite) are counted.\n\n"
            + records_table(rows, ["metric", "all_layers", "deep_only", "n_layers", "skipped", "aggregation"],
                            ["metric", "all layers (l = 0..L)", "deep only (l ≥ 1)", "layers", "skipped (all / deep)",
                             "aggregation"]))


def credit_form(r: dict) -> str:
    parts = _head(r)
    parts.append(f"Signal: `{r.get('signal')}`: {r.get('signal_source') or MISSING}")
    parts += [_credit_layers(r), _credit_means(r)] + _flags_section(r)
    na = r.get("not_available") or {}
    if na:
        parts.append("## Not available\n\n" + table(["metric", "why"], [[k, v] for k, v in na.items()]))
    drift = r.get("drift_per_tensor")
    if drift:
        parts.append("## Feature drift per tensor\n\n"
                     + records_table([{"tensor": code(k), "drift": v} for k, v in drift.items()],
                                     ["tensor", "drift"], ["tensor", "‖W − W_init‖ / ‖W_init‖"]))
    parts += _fields_table(r, skip={"method_name", "signal", "signal_source", "means", "not_available",
                                    "drift_per_tensor"})
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------- edges

def edges_form(r: dict) -> str:
    parts = _head(r) + _flags_section(r)
    p = r.get("params") or {}
    parts.append(f"N = {r.get('n_nodes')} nodes, M = {r.get('n_observations')} observations over "
                 f"{r.get('n_blocks')} blocks; {p.get('method')} on {p.get('where')}-norm signals "
                 f"({p.get('norm')} / {p.get('agg')}).")
    sc = r.get("scoring")
    if sc:
        parts.append(f"## Scoring against the truth\n\nTruth: {code(sc.get('truth'))}; queries: {sc.get('queries')}."
                     "\n\n" + records_table([sc], ["mrr", "random_mrr", "hits@1", "hits@3", "hits@10", "n_queries"],
                                            ["MRR", "random MRR", "Hits@1", "Hits@3", "Hits@10", "queries"]))
    te = r.get("top_edges") or []
    if te:
        rows = [{**e, "known": "yes" if e.get("known") else "no",
                 "true": MISSING if e.get("true") is None else ("yes" if e["true"] else "no")} for e in te]
        parts.append(f"## Top {len(te)} edges\n\n" + records_table(rows, ["rank", "source", "target", "score", "known",
                                                                            "true"]))
    parts += _fields_table(r, skip={"method_name", "scoring", "top_edges", "n_nodes", "n_observations", "n_blocks"})
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------- relevance

_REL = [("weight_relevance", "weight relevance"), ("normalized_weight_relevance", "× std (reference's)"),
        ("per_raw_unit_relevance", "per raw unit")]


def relevance_form(r: dict) -> str:
    parts = _head(r) + _flags_section(r)
    fn = r.get("feature_names") or []
    trunk = r.get("trunk") or {}
    if trunk:
        parts.append("## Trunk (input layer) and normaliser\n\n"
                     + records_table([{"feature": f, **{c: trunk[c].get(f) for c in trunk}} for f in fn],
                                     ["feature", *trunk]))
    sens = r.get("sensitivity") or {}
    mean_abs = sens.get("mean_abs") or {}
    obs = sens.get("observation") or {}
    jac = obs.get("jacobian") or {}
    if obs:
        parts.append("## Observation\n\nThe point the Jacobian is taken at:\n\n"
                     + table(["feature", "x"], [[f, num(x)] for f, x in zip(fn, obs.get("x") or [])]))
    per_head = r.get("per_head") or {}
    for head, e in per_head.items():
        cols = [(k, h) for k, h in _REL if k in e]
        src = {k: e[k] for k, _ in cols}
        if mean_abs:
            cols.append(("mean_abs", f"mean |∂pred/∂x| over {sens.get('over')}"))
            src["mean_abs"] = mean_abs.get(head) or {}
        if jac:
            cols.append(("jacobian", "∂pred/∂x at the observation"))
            src["jacobian"] = jac.get(head) or {}
        rows = [{"feature": f, **{k: src[k].get(f) for k, _ in cols}} for f in fn]
        parts.append(f"## Head `{head}`\n\n" + records_table(rows, ["feature", *[k for k, _ in cols]],
                                                               ["feature", *[h for _, h in cols]]))
    if per_head:
        heads = list(per_head)
        neurons = list(next(iter(per_head.values())).get("head_reliance") or {})
        if neurons:
            rows = [{"neuron": n, **{h: (per_head[h].get("head_reliance") or {}).get(n) for h in heads}}
                    for n in neurons]
            parts.append("## Head reliance |w_h| per last-layer neuron\n\n" + records_table(rows, ["neuron", *heads]))
        if any("mean_step_size" in per_head[h] for h in heads):
            parts.append("## Mean step size per head\n\n"
                         + records_table([{"head": h, "mean_step_size": per_head[h].get("mean_step_size")}
                                          for h in heads]))
    parts += _fields_table(r, skip={"method_name", "trunk", "per_head", "sensitivity", "feature_names",
                                    "head_names"})
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------- compare

def compare_form(r: dict) -> str:
    parts = _head(r) + _flags_section(r)
    labels = [str(x) for x in r.get("labels") or []]
    rows = r.get("rows") or []
    if rows:
        body = [[row["metric"], *fmt_column(row["values"])] for row in rows]  # one quantity per row
        parts.append("## Side by side\n\n" + table(["metric", *labels], body))
    parts += _fields_table(r, skip={"rows", "labels"})
    return "\n\n".join(parts) + "\n"


def lint_form(r: dict) -> str:
    parts = _head(r) + _flags_section(r)
    findings = r.get("findings") or []
    if findings:
        parts.append("## Findings\n\n" + table(["file", "line", "col", "rule", "pitfall", "code"], [
            [code(x.get("file")), num(x.get("line")), num(x.get("col")), x.get("rule"), x.get("pitfall"),
             code(x.get("text"))] for x in findings]))
        why = {}
        for x in findings:
            why.setdefault(x.get("rule"), x.get("message"))
        parts.append("## Why each rule matters\n\n" + table(["rule", "why"], [[k, v] for k, v in why.items()]))
    parts += _fields_table(r, skip={"findings"})
    return "\n\n".join(parts) + "\n"


def inspect_form(r: dict) -> str:
    parts = _head(r) + _flags_section(r)
    if r.get("other_entries"):
        parts.append("## Other entries\n\n" + table(["key", "type", "value"], [
            [x.get("key"), x.get("type"), entry_value(x)] for x in r["other_entries"]]))
    parts += _fields_table(r, skip={"other_entries"})
    return "\n\n".join(parts) + "\n"


SECTIONS = {AUDIT: audit_form, "fadiag.credit/1": credit_form, "fadiag.credit/2": credit_form,
            "fadiag.edges/1": edges_form,
            "fadiag.relevance/1": relevance_form, "fadiag.compare/1": compare_form,
            "fadiag.inspect/1": inspect_form, "fadiag.lint/1": lint_form}


def render(reports: list, **_) -> str:
    return "\n---\n\n".join(SECTIONS.get(r.get("schema"), generic_section)(r) for r in reports)
