"""Table view of ``fadiag lint``: per file, line:col, rule and the code; each rule's explanation once, below."""

from __future__ import annotations

from rich.text import Text

from ...render.table import add_columns, table, verdict_row


def lint_tables(r) -> list:
    parts = [Text(f"fadiag lint: {', '.join(r.paths or [])} ({r.n_files} files)", style="bold")]
    findings = r.findings or []
    by_file = {}
    for x in findings:  # one table per file, so a long path never squeezes the columns
        by_file.setdefault(x["file"], []).append(x)
    for path, xs in by_file.items():
        parts.append(Text(path, style="bold"))
        t = table()
        add_columns(t, (("line:col", "num"), ("rule", "text"), ("code", "text")))
        for x in xs:
            t.add_row(f"{x['line']}:{x['col']}", f"{x['rule']} ({x['pitfall']})", x["text"])
        parts.append(t)
    if findings:
        why = {}
        for x in findings:
            why.setdefault(x["rule"], x["message"])
        parts += [Text.assemble((f"{rule}: ", "bold"), msg) for rule, msg in why.items()]
    parts.append(verdict_row(r))
    return parts
