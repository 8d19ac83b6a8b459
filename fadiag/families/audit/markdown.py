"""The audit report as the filled reporting form of REPORTING_TEMPLATE.md (``--format markdown``).

Section by section, with the template's ``## `` headings in the template's order. Every judgement shown
(flags, layers below the (b) floor, non-finite layers, fp16 weights) is a property of the AuditReport.
"""

from __future__ import annotations

from .report import AUDIT_SCHEMA
from ...render.markdown import MISSING, code, fill_in, flags_table, get, num, table, verdict_line
from ...render.table import fmt_column, plain

_ACC_SOURCES = {
    "spec": "taken from the spec (audit.headline_acc), not measured by fadiag",
    "given": "given on the command line (--headline-acc), not measured by fadiag",
}
_BASELINE_SOURCES = {
    "spec": "taken from the spec (audit.frozen_baseline_acc), not measured in this run",
    "given": "given on the command line (--frozen-baseline-acc), not measured in this run",
}


def _acc_how(r) -> str:
    src = r.headline_acc_source
    data = r.data or {}
    if src == "computed":
        return (f"computed by fadiag: top-1 accuracy pooled over all eval samples "
                f"({get(data, 'batches')} batches × {get(data, 'batch_size')} rows)")
    return _ACC_SOURCES.get(src, str(src) if src else MISSING)


def _baseline_how(r) -> str:
    src = r.frozen_baseline_source
    if r.frozen_baseline_acc is None and not src:
        return "unknown: no baseline given, so (d) is skipped (give --frozen-baseline-acc or --frozen-baseline train)"
    if src and src.startswith("trained"):
        return f"trained by fadiag in this run ({plain(src)})"
    return _BASELINE_SOURCES.get(src, str(src) if src else MISSING)


def _safe(r, *, long: bool) -> str:
    trusted = (r.checkpoint or {}).get("trusted")
    if trusted is None:
        return MISSING
    if long:
        return ("**NO**: loaded with --trust-checkpoint (arbitrary unpickling ran code from the file)" if trusted
                else "yes: read without unpickling (torch weights_only, safetensors or npz)")
    return "NO: loaded with --trust-checkpoint (arbitrary unpickling)" if trusted else "yes"


def _identification(r) -> str:
    ck = r.checkpoint or {}
    data = r.data or {}
    rows = [
        ["method name", r.method_name or MISSING],
        ["checkpoint path", code(ck["path"]) if ck.get("path") else MISSING],
        ["checkpoint sha256", code(ck["sha256"]) if ck.get("sha256") else MISSING],
        ["checkpoint format", ck.get("format") or MISSING],
        ["read without unpickling", _safe(r, long=False)],
        ["model spec", code(r.spec) if r.spec else MISSING],
        ["eval data source", code(data["source"]) if data.get("source") else MISSING],
        ["eval batches × batch size", f"{get(data, 'batches')} × {get(data, 'batch_size')}"],
        ["data seed", get(data, "seed")],
        ["fadiag version", r.fadiag_version or MISSING],
        ["notes", r.notes or "none"],
        ["training recipe", fill_in("optimiser, learning rate and schedule, epochs, batch size, weight decay")],
        ["number of seeds", fill_in("how many independent training seeds; this form covers one checkpoint")],
        ["compute", fill_in("hardware and wall-clock time per training run")],
    ]
    return "## 1. Identification\n\n" + table(["field", "value"], rows)


def _headline(r) -> str:
    d = r.flag("d")
    margin = num(d.value) if d else MISSING
    if d and d.flagged is None:
        margin += " (skipped)"
    rows = [
        ["headline accuracy", num(r.headline_acc), _acc_how(r)],
        ["frozen-blocks baseline accuracy", num(r.frozen_baseline_acc), _baseline_how(r)],
        ["margin over the baseline (pp)", margin, "headline minus baseline, in percentage points (diagnostic (d))"],
        ["across seeds", fill_in("e.g. mean ± std over N seeds"),
         fill_in("which statistic the paper reports, and over which seeds")],
        ["gradient-alignment headline (Γ), if claimed", fill_in("value or \"not claimed\""),
         fill_in("which layers, which mean; see section 5")],
    ]
    return ("## 2. Headline numbers and how they were aggregated\n\n"
            + table(["quantity", "value", "how it was obtained and aggregated"], rows))


def _layer_rows(r) -> list:
    h, g, n = r.residual_norms or [], r.bp_grad_norms or [], r.n_layers
    hcol = fmt_column([h[i] if i < len(h) else None for i in range(n)])
    gcol = fmt_column([g[i] if i < len(g) else None for i in range(n)])
    low, bad = set(r.low_g_layers), set(r.nonfinite_h_layers) | set(r.nonfinite_g_layers)
    rows = []
    for i in range(n):
        notes = (["stability layer l*"] if i == r.stability_layer else []) + (
            ["‖g_l‖ below floor"] if i in low else []) + (["non-finite"] if i in bad else [])
        rows.append([str(i), hcol[i], gcol[i], ", ".join(notes)])
    return rows


def _diagnostics(r) -> str:
    l_star = r.stability_layer
    settings = ", ".join(f"{k} = {num(v)}" for k, v in (r.thresholds or {}).items()) or MISSING
    out = ["## 3. The four diagnostics", "",
           "Per-layer values, measured on the first eval batch (median over samples of the per-sample L2 norm):",
           "", table(["layer l", "‖h_l‖", "‖g_l‖", "note"], _layer_rows(r)), "", "Flags:", "",
           flags_table(r.flags), "",
           f"Thresholds: {settings}. (a) growth mode: {r.growth_mode or MISSING}; "
           f"(c) stability layer l* = {num(l_star) if l_star is not None else MISSING}."]
    return "\n".join(out)


def _verdict(r) -> str:
    walk = (fill_in("which claims of the paper change given the flags above, and how") if r.flagged
            else "none needed (nothing flagged)")
    return f"## 4. Verdict\n\n{verdict_line(r)}\n\nWalk-back: {walk}"


def _credit_blank() -> str:
    return ("## 5. Credit metrics per layer\n\n"
            + fill_in("not measured by `fadiag audit`; paste the per-layer table of "
                      "`fadiag credit CKPT --format markdown` (Γ_l, ‖a_l‖, ‖g_l‖, ρ_l, Δ_l, R_l, M_l per layer, "
                      "with the all-layer mean, the deep-only mean (l ≥ 1) and the aggregation named), "
                      "or write \"not reported\""))


def _pitfall_cosine(r) -> str:
    floor = (r.thresholds or {}).get("g_norm_floor")
    low, null = r.low_g_layers, r.nonfinite_g_layers
    if low or null:
        parts = []
        if low:
            parts.append(f"‖g_l‖ is below the (b) floor {num(floor)} at layers {', '.join(map(str, low))}")
        if null:
            parts.append(f"‖g_l‖ is non-finite at layers {', '.join(map(str, null))}")
        p2 = "; ".join(parts) + ": a Γ_l there is uninterpretable (cosine eps clamp)."
    elif floor is not None and r.bp_grad_norms:
        p2 = f"‖g_l‖ ≥ the (b) floor {num(floor)} at every layer."
    else:
        p2 = MISSING
    return p2 + " Paper's cosines: " + fill_in("computed by hand in float64, or with F.cosine_similarity?")


def _pitfall_fp16(r) -> str:
    dtypes = r.weight_dtypes
    p3 = f"checkpoint weight dtypes: {', '.join(dtypes) if dtypes else MISSING}."
    if r.has_fp16_weights:
        p3 += " **float16 weights: BP gradients near 5e-10 underflow to zero; read (b) and any Γ with care.**"
    return p3 + " fadiag reduces norms and cosines in float64."


def _pitfalls(r) -> str:
    nf = r.nonfinite_count
    nonfinite = (MISSING if nf is None else
                 f"{num(nf)} in weights, activations and gradients" + (" (flagged)" if nf else ""))
    rows = [
        ["1", "`x.norm(-1)` is not the per-row L2 norm",
         "fadiag: every norm here is the per-sample L2 norm along the feature dimension (x.norm(dim=-1)). "
         "Paper's code: " + fill_in("how its norms were computed")],
        ["2", "`F.cosine_similarity` clamps tiny ‖g‖", _pitfall_cosine(r)],
        ["3", "fp16 underflows small BP gradients", _pitfall_fp16(r)],
        ["4", "feedback-matrix specificity",
         fill_in("were the exact training-time B_l saved and used? `fadiag audit` does not use them")],
        ["5", "aggregation of per-layer values",
         f"headline accuracy: {_acc_how(r)}. Γ and other per-layer headlines: " + fill_in("the aggregation")],
        ["6", "layer-0 dominance", fill_in("deep-only mean beside the all-layer mean, from section 5")],
        ["6.5", "auxiliary nets not saved",
         fill_in("were B_l / value nets saved? Missing inputs must read N/A, never a fallback value")],
        ["–", "checkpoint read safely", _safe(r, long=True)],
        ["–", "non-finite values", nonfinite],
    ]
    return "## 6. Pitfall disclosures\n\n" + table(["#", "pitfall (docs/science.md §2)", "disclosure"], rows)


def audit_form(r) -> str:
    ck = r.checkpoint or {}
    title = r.method_name or MISSING
    head = f"# fadiag audit: {title}" + (f" ({code(ck['path'])})" if ck.get("path") else "")
    intro = ("Reporting form of REPORTING_TEMPLATE.md, filled by fadiag from a "
             f"`{r.schema}` report. Replace every _(fill in: ...)_ or write \"not reported\".")
    parts = [head, intro, f"Verdict: {verdict_line(r)}", _identification(r), _headline(r), _diagnostics(r),
             _verdict(r), _credit_blank(), _pitfalls(r)]
    return "\n\n".join(parts) + "\n"


SECTIONS = {AUDIT_SCHEMA: audit_form}
