"""``--format table``: rich tables for people (the default on a terminal).

Dispatches on each report's ``schema``; families other than audit register their table function in
``TABLES``. Numbers are formatted here, never computed.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text


def fmt_num(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def flag_text(flagged) -> Text:
    if flagged is None:
        return Text("skipped", style="dim")
    return Text("FLAG", style="bold red") if flagged else Text("ok", style="green")


def verdict_text(r: dict) -> Text:
    """The verdict in red when any flag is raised, green otherwise (decided by the flags, not the wording)."""
    bad = any(f.get("flagged") for f in r.get("flags") or [])
    return Text(r.get("verdict", ""), style="bold red" if bad else "bold green")


def checks_table(r: dict, title: str = "checks") -> Table:
    """The flags of any report: id, check, value, threshold, status, detail."""
    f = Table(title=title, title_justify="left")
    for c, j in (("id", "left"), ("check", "left"), ("value", "right"), ("threshold", "right"),
                 ("status", "left"), ("detail", "left")):
        f.add_column(c, justify=j)
    for fl in r.get("flags") or []:
        f.add_row(str(fl["id"]), fl["name"], fmt_num(fl.get("value")), fmt_num(fl.get("threshold")),
                  flag_text(fl.get("flagged")), fl.get("detail") or "")
    return f


def audit_tables(r: dict) -> list:
    ck = r.get("checkpoint", {})
    title = f"{r.get('method_name') or ''}  {ck.get('path', '')}".strip()
    layers = Table(title=f"fadiag audit: {title}", title_justify="left")
    layers.add_column("layer", justify="right")
    layers.add_column("‖h_l‖ (median)", justify="right")
    layers.add_column("‖g_l‖ (median)", justify="right")
    layers.add_column("", justify="left")
    g = r.get("bp_grad_norms") or []
    l_star = r.get("stability_layer")
    floor = (r.get("thresholds") or {}).get("g_norm_floor")
    for i, h in enumerate(r.get("residual_norms") or []):
        gv = g[i] if i < len(g) else None
        notes = []
        if i == l_star:
            notes.append("stability layer")
        if floor is not None and (gv is None or gv < floor):
            notes.append("below floor" if gv is not None else "non-finite")
        layers.add_row(str(i), fmt_num(h), fmt_num(gv), ", ".join(notes))

    flags = Table(title="diagnostics", title_justify="left")
    for c, j in (("id", "left"), ("diagnostic", "left"), ("value", "right"), ("threshold", "right"),
                 ("status", "left"), ("detail", "left")):
        flags.add_column(c, justify=j)
    for f in r.get("flags") or []:
        flags.add_row(f"({f['id']})", f["name"], fmt_num(f.get("value")), fmt_num(f.get("threshold")),
                      flag_text(f.get("flagged")), f.get("detail") or "")
    summary = Text.assemble(
        ("verdict: ", "bold"), verdict_text(r),
        f"\nheadline acc {fmt_num(r.get('headline_acc'))} ({r.get('headline_acc_source')}), "
        f"frozen baseline {fmt_num(r.get('frozen_baseline_acc'))}"
        f"{' (' + r['frozen_baseline_source'] + ')' if r.get('frozen_baseline_source') else ''}; "
        f"sha256 {str(ck.get('sha256', ''))[:12]}, format {ck.get('format')}"
        f"{', TRUSTED (unpickled)' if ck.get('trusted') else ''}",
    )
    return [layers, flags, summary]


TABLES = {"fadiag.audit/1": audit_tables}


def register(schema: str, fn) -> None:
    TABLES[schema] = fn


def _lazy_register(schema: str) -> None:
    import importlib

    mod = {"fadiag.credit/1": "fadiag.render.table_credit", "fadiag.edges/1": "fadiag.render.table_edges",
           "fadiag.relevance/1": "fadiag.render.table_relevance", "fadiag.compare/1": "fadiag.render.table_compare",
           "fadiag.inspect/1": "fadiag.render.table_inspect", "fadiag.lint/1": "fadiag.render.table_lint"}.get(schema)
    if mod:
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


def render(reports: list, *, color: bool = False, width: int = 110, **_) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=color, color_system="standard" if color else None,
                      no_color=not color, highlight=False)
    for i, r in enumerate(reports):
        schema = r.get("schema", "")
        if schema not in TABLES:
            _lazy_register(schema)
        fn = TABLES.get(schema)
        if fn is None:
            console.print(f"(no table view for schema {schema!r}; use --format json)")
            continue
        if i:
            console.print()
        for part in fn(r):
            console.print(part)
    return buf.getvalue()
