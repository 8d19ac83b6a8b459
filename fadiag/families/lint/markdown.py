"""``fadiag lint``'s markdown form (its record's "markdown" form: fadiag.registry)."""

from __future__ import annotations

from ...render.markdown import code, fields_table, flags_section, head, num, table


def lint_form(r) -> str:
    parts = head(r) + flags_section(r)
    findings = r.findings or []
    if findings:
        parts.append("## Findings\n\n" + table(["file", "line", "col", "rule", "pitfall", "code"], [
            [code(x.get("file")), num(x.get("line")), num(x.get("col")), x.get("rule"), x.get("pitfall"),
             code(x.get("text"))] for x in findings]))
        why = {}
        for x in findings:
            why.setdefault(x.get("rule"), x.get("message"))
        parts.append("## Why each rule matters\n\n" + table(["rule", "why"], [[k, v] for k, v in why.items()]))
    parts += fields_table(r, skip={"findings"})
    return "\n\n".join(parts) + "\n"
