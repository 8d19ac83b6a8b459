"""Table view of ``fadiag inspect`` reports. Names from the file arrive with control characters and rich
markup escaped (cli.emit -> fadiag.text.sanitize)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from ...render.table import entry_value, flag_text, verdict_row


def _count(x: dict) -> Text:
    n = x.get("nonfinite")
    if n is None:
        return Text("not counted", style="bold yellow")
    return Text(str(n) + ("*" if x.get("note") else ""), style="bold red" if n else "")


def _where(key) -> str:
    if key is None:
        return "no state dict found"
    return "state dict at the top level" if key == "" else f"state dict under '{key}'"


def inspect_tables(r) -> list:
    ck = r.checkpoint or {}
    head = Text.from_markup(f"fadiag inspect: {ck.get('path')} ({ck.get('format')}, sha256 {str(ck.get('sha256'))[:12]})",
                style="bold")
    t = Table(title="tensors", title_justify="left")
    for c, j in (("key", "left"), ("shape", "left"), ("dtype", "left"), ("numel", "right"), ("non-finite", "right")):
        t.add_column(c, justify=j)
    notes = []
    for x in r.tensors or []:
        t.add_row(str(x["key"]), str(tuple(x["shape"])), str(x["dtype"]), str(x["numel"]), _count(x))
        if x.get("note"):
            notes.append(f"{x['key']}: {x['note']}")
    parts = [head, t]
    if r.tensors_not_listed:
        parts.append(Text(f"... and {r.tensors_not_listed} more tensor(s), counted but not listed"))
    if notes:
        parts.append(Text.from_markup("* " + "\n* ".join(notes[:20]) + (f"\n... ({len(notes) - 20} more)" if len(notes) > 20 else "")))
    if r.other_entries:
        o = Table(title="other entries", title_justify="left")
        o.add_column("key")
        o.add_column("type")
        o.add_column("value")
        for x in r.other_entries:
            o.add_row(str(x["key"]), str(x["type"]), entry_value(x))
        parts.append(o)
        if r.entries_not_listed:
            parts.append(Text(f"... and {r.entries_not_listed} more entries, not listed"))
    if r.globals:
        g = Table(title="pickle globals", title_justify="left")
        g.add_column("global")
        g.add_column("class")
        for x in r.globals:
            style = {"dangerous": "bold red", "unknown": "yellow"}.get(x.get("class"), "")
            g.add_row(str(x.get("name")), Text(str(x.get("class")), style=style))
        parts.append(g)
    f = Table(title="checks", title_justify="left")
    for c in ("check", "status", "detail"):
        f.add_column(c)
    for fl in r.flags:
        f.add_row(fl.name, flag_text(fl.flagged), fl.detail)
    parts.append(f)
    if r.refusal:
        parts.append(Text.from_markup(f"refused: {r.refusal}"))
    parts.append(Text.from_markup(f"{r.n_tensors} tensors, {r.n_elements} elements; {_where(r.state_dict_key)}; "
                      f"embedded spec: {'yes' if r.embedded_spec else 'no'}"))
    parts.append(verdict_row(r))
    return parts
