"""Table view of ``fadiag compare``: one column per report, one row per headline number."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .table import fmt_num, register, verdict_text


def compare_tables(r: dict) -> list:
    t = Table(title=f"fadiag compare ({r.get('compared_schema')})", title_justify="left")
    t.add_column("metric")
    for lab in r.get("labels", []):
        t.add_column(str(lab), justify="right")
    for row in r.get("rows", []):
        t.add_row(row["metric"], *[fmt_num(v) for v in row["values"]])
    parts = [t]
    if r.get("baseline") is not None:
        g = Table(title="regression gate", title_justify="left")
        for c in ("report", "flag", "baseline", "now", "reason"):
            g.add_column(c)
        for x in r.get("regressions", []):
            g.add_row(str(x.get("report")), str(x.get("flag")), fmt_num(x.get("baseline_value")),
                      fmt_num(x.get("value")), x.get("reason", ""))
        parts.append(g)
    parts.append(Text.assemble(("verdict: ", "bold"), verdict_text(r)))
    return parts


register("fadiag.compare/1", compare_tables)
