"""Table view of ``fadiag compare``: one column per report, one row per headline number (each row, one
quantity, formatted one way)."""

from __future__ import annotations

from ...render.table import add_columns, fmt_column, table, verdict_row


def _cell(v) -> str:
    return "" if v is None else str(v)


def compare_tables(r) -> list:
    t = table(f"fadiag compare ({r.compared_schema})")
    labels = [str(lab) for lab in r.labels or []]
    add_columns(t, [("metric", "text")] + [(lab, "text") for lab in labels])
    for row in r.rows or []:
        t.add_row(row["metric"], *fmt_column(row["values"]))
    parts = [t]
    if r.baseline is not None:
        g = table("regression gate")
        add_columns(g, (("report", "text"), ("flag", "key"), ("baseline", "num"), ("now", "num"), ("reason", "text")))
        for x in r.regressions or []:
            base, now = (fmt_column([x.get("baseline_value"), x.get("value")]) if x.get("flag") is not None
                         else ("", ""))
            g.add_row(str(x.get("report")), _cell(x.get("flag")), base, now, x.get("reason", ""))
        parts.append(g)
    parts.append(verdict_row(r))
    return parts
