"""Table view of ``fadiag lint``: file:line, rule, message."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .table import register, verdict_text


def lint_tables(r: dict) -> list:
    t = Table(title=f"fadiag lint: {', '.join(r.get('paths', []))} ({r.get('n_files')} files)", title_justify="left")
    for c in ("location", "rule", "code", "why"):
        t.add_column(c)
    for x in r.get("findings", []):
        t.add_row(f"{x['file']}:{x['line']}:{x['col']}", f"{x['rule']} ({x['pitfall']})", x["text"], x["message"])
    return [t, Text.assemble(("verdict: ", "bold"), verdict_text(r))]


register("fadiag.lint/1", lint_tables)
