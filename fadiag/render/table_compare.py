"""Table view of ``fadiag compare``: one column per report, one row per headline number (each row, one
quantity, formatted one way)."""

from __future__ import annotations

from rich.text import Text

from .table import add_columns, fmt_column, register, table, verdict_text


def _cell(v) -> str:
    return "" if v is None else str(v)


def compare_tables(r: dict) -> list:
    t = table(f"fadiag compare ({r.get('compared_schema')})")
    labels = [str(lab) for lab in r.get("labels", [])]
    add_columns(t, [("metric", "text")] + [(lab, "text") for lab in labels])
    for row in r.get("rows", []):
        t.add_row(row["metric"], *fmt_column(row["values"]))
    parts = [t]
    if r.get("baseline") is not None:
        g = table("regression gate")
        add_columns(g, (("report", "text"), ("flag", "key"), ("baseline", "num"), ("now", "num"), ("reason", "text")))
        for x in r.get("regressions", []):
            base, now = (fmt_column([x.get("baseline_value"), x.get("value")]) if x.get("flag") is not None
                         else ("", ""))
            g.add_row(str(x.get("report")), _cell(x.get("flag")), base, now, x.get("reason", ""))
        parts.append(g)
    parts.append(Text.assemble(("verdict: ", "bold"), verdict_text(r)))
    return parts


register("fadiag.compare/1", compare_tables)
