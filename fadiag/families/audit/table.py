"""``fadiag audit``'s table form (its family record's "table" form: fadiag.registry)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from ...render.table import add_columns, checks_table, fmt_acc, fmt_column, plain, table, verdict_row


def _layers_table(r) -> Table:
    ck = r.checkpoint or {}
    title = f"{r.method_name or ''}  {ck.get('path', '')}".strip()
    layers = table(f"fadiag audit: {title}")
    add_columns(layers, (("layer", "num"), ("‖h_l‖ (median)", "num"), ("‖g_l‖ (median)", "num"), ("", "text")))
    g, hs = r.bp_grad_norms or [], r.residual_norms or []
    low, bad = set(r.low_g_layers), set(r.nonfinite_g_layers)
    gcol = fmt_column([g[i] if i < len(g) else None for i in range(len(hs))])
    for i, hv in enumerate(fmt_column(hs)):
        notes = (["stability layer"] if i == r.stability_layer else []) + (
            ["below floor"] if i in low else ["non-finite"] if i in bad else [])
        layers.add_row(str(i), hv, gcol[i], ", ".join(notes))
    return layers


def audit_tables(r) -> list:
    ck = r.checkpoint or {}
    fb = r.frozen_baseline_acc
    base = (f"frozen baseline {fmt_acc(fb)} ({plain(r.frozen_baseline_source)})" if fb is not None else
            "no frozen baseline, (d) skipped")
    data = r.data or {}
    skipped = [f"({fl.id})" for fl in r.flags if fl.flagged is None]
    summary = verdict_row(
        r, (f", with {' '.join(skipped)} skipped (not checked)" if skipped else "") + f"\nheadline acc {fmt_acc(r.headline_acc)} ({r.headline_acc_source}), {base}; "
        f"eval data {data.get('source')}{' (' + data['split'] + ' split)' if data.get('split') else ''}; "
        f"{data['batch_size_note'] + '; ' if data.get('batch_size_note') else ''}"
        f"sha256 {str(ck.get('sha256', ''))[:12]}, format {ck.get('format')}"
        f"{', TRUSTED (unpickled)' if ck.get('trusted') else ''}")
    read = (data.get("stream") or {}).get("read_as")
    parts = [_layers_table(r), checks_table(r, "diagnostics", ids=lambda i: f"({i})")]
    if read:  # every inference fadiag made about the model, on one line (fadiag.stream.readings)
        parts.append(Text.assemble(("read as: ", "bold"), read))
    return parts + [summary]
