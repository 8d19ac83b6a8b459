"""``fadiag compare``'s markdown form (its record's "markdown" form: fadiag.registry)."""

from __future__ import annotations

from ...render.markdown import fields_table, flags_section, fmt_column, head, table


def compare_form(r) -> str:
    parts = head(r) + flags_section(r)
    labels = [str(x) for x in r.labels or []]
    if r.rows:
        body = [[row["metric"], *fmt_column(row["values"])] for row in r.rows]  # one quantity per row
        parts.append("## Side by side\n\n" + table(["metric", *labels], body))
    parts += fields_table(r, skip={"rows", "labels"})
    return "\n\n".join(parts) + "\n"
