"""Table view of ``fadiag lint``: file:line:col, rule, the code; each rule's explanation once, below."""

from __future__ import annotations

from rich.text import Text

from .table import add_columns, register, table, verdict_text


def lint_tables(r: dict) -> list:
    parts = [Text(f"fadiag lint: {', '.join(r.get('paths', []))} ({r.get('n_files')} files)", style="bold")]
    findings = r.get("findings", [])
    if findings:
        t = table("findings")
        add_columns(t, (("location", "text"), ("rule", "text"), ("code", "text")))
        for x in findings:
            t.add_row(f"{x['file']}:{x['line']}:{x['col']}", f"{x['rule']} ({x['pitfall']})", x["text"])
        parts.append(t)
        why = {}
        for x in findings:
            why.setdefault(x["rule"], x["message"])
        parts += [Text.assemble((f"{rule}: ", "bold"), msg) for rule, msg in why.items()]
    parts.append(Text.assemble(("verdict: ", "bold"), verdict_text(r)))
    return parts


register("fadiag.lint/1", lint_tables)
