"""Table view of ``fadiag inspect`` reports."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .table import entry_value, flag_text, register, verdict_text


def inspect_tables(r: dict) -> list:
    ck = r.get("checkpoint", {})
    head = Text(f"fadiag inspect: {ck.get('path')} ({ck.get('format')}, sha256 {str(ck.get('sha256'))[:12]})",
                style="bold")
    t = Table(title="tensors", title_justify="left")
    for c, j in (("key", "left"), ("shape", "left"), ("dtype", "left"), ("numel", "right"), ("non-finite", "right")):
        t.add_column(c, justify=j)
    for x in r.get("tensors", []):
        t.add_row(x["key"], str(tuple(x["shape"])), x["dtype"], str(x["numel"]),
                  Text(str(x["nonfinite"]), style="bold red" if x["nonfinite"] else ""))
    parts = [head, t]
    if r.get("other_entries"):
        o = Table(title="other entries", title_justify="left")
        o.add_column("key")
        o.add_column("type")
        o.add_column("value")
        for x in r["other_entries"]:
            o.add_row(x["key"], x["type"], entry_value(x))
        parts.append(o)
    f = Table(title="checks", title_justify="left")
    for c in ("check", "status", "detail"):
        f.add_column(c)
    for fl in r.get("flags", []):
        f.add_row(fl["name"], flag_text(fl["flagged"]), fl.get("detail", ""))
    parts.append(f)
    key = r.get("state_dict_key")
    parts.append(Text(f"{r.get('n_tensors')} tensors, {r.get('n_elements')} elements; state dict "
                      f"{'under ' + key if key else 'at the top level'}; embedded spec: "
                      f"{'yes' if r.get('embedded_spec') else 'no'}"))
    parts.append(Text.assemble(("verdict: ", "bold"), verdict_text(r)))
    return parts


register("fadiag.inspect/1", inspect_tables)
