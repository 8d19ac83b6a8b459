"""Table view of ``fadiag relevance``: per head, features ranked by weight relevance (and sensitivity)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .table import checks_table, fmt_num, register, verdict_text


def relevance_tables(r: dict, top: int = 12) -> list:
    parts = []
    fn = r.get("feature_names") or []
    trunk = r.get("trunk") or {}
    if trunk:
        t = Table(title=f"fadiag relevance: trunk ({r.get('checkpoint', {}).get('path')})", title_justify="left")
        t.add_column("feature")
        cols = list(trunk)
        for c in cols:
            t.add_column(c, justify="right")
        for f in fn:
            t.add_row(f, *[fmt_num(trunk[c].get(f)) for c in cols])
        parts.append(t)
    sens = (r.get("sensitivity") or {}).get("mean_abs") or {}
    for head, entry in (r.get("per_head") or {}).items():
        wr = entry.get("weight_relevance") or {}
        ranked = sorted(wr, key=lambda f: -(wr[f] if wr[f] is not None else float("-inf")))
        t = Table(title=f"head {head}: features ranked by weight relevance (path norm)", title_justify="left")
        t.add_column("rank", justify="right")
        t.add_column("feature")
        t.add_column("weight relevance", justify="right")
        if "per_raw_unit_relevance" in entry:
            t.add_column("per raw unit", justify="right")
        if sens:
            t.add_column("mean |∂pred/∂x|", justify="right")
        for i, f in enumerate(ranked[:top], 1):
            row = [str(i), f, fmt_num(wr[f])]
            if "per_raw_unit_relevance" in entry:
                row.append(fmt_num(entry["per_raw_unit_relevance"].get(f)))
            if sens:
                row.append(fmt_num(sens.get(head, {}).get(f)))
            t.add_row(*row)
        parts.append(t)
    parts.append(checks_table(r))
    parts.append(Text.assemble(("verdict: ", "bold"), verdict_text(r),
                               f"   step sizes: {r.get('step_size_kind') or 'absent'}"))
    return parts


register("fadiag.relevance/1", relevance_tables)
