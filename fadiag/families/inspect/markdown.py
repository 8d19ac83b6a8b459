"""``fadiag inspect``'s markdown form (its record's "markdown" form: fadiag.registry)."""

from __future__ import annotations

from ...render.markdown import fields_table, flags_section, head, table
from ...render.table import entry_value


def inspect_form(r) -> str:
    parts = head(r) + flags_section(r)
    if r.other_entries:
        parts.append("## Other entries\n\n" + table(["key", "type", "value"], [
            [x.get("key"), x.get("type"), entry_value(x)] for x in r.other_entries]))
    parts += fields_table(r, skip={"other_entries"})
    return "\n\n".join(parts) + "\n"
