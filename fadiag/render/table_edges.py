"""Table view of ``fadiag edges``: summary, scoring against truth with the random baseline, top-k edges."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .table import checks_table, fmt_num, register, verdict_text


def edges_tables(r: dict) -> list:
    p = r.get("params") or {}
    head = Text(f"fadiag edges: {(r.get('checkpoint') or {}).get('path')}  N = {r.get('n_nodes')} nodes, "
                f"M = {r.get('n_observations')} observations, {p.get('method')} on {p.get('where')}-norm "
                f"signals ({p.get('norm')}/{p.get('agg')})"
                + (f", bootstrap {p['bootstrap']}x{p['samples']} (seed {p['seed']})" if p.get("bootstrap") else ""))
    parts = [head]
    sc = r.get("scoring")
    if sc:
        t = Table(title=f"scoring against {sc.get('truth')} ({sc.get('queries')})", title_justify="left")
        for c in ("MRR", "random MRR", "Hits@1", "Hits@3", "Hits@10", "queries"):
            t.add_column(c, justify="right")
        t.add_row(fmt_num(sc.get("mrr")), fmt_num(sc.get("random_mrr")), fmt_num(sc.get("hits@1")),
                  fmt_num(sc.get("hits@3")), fmt_num(sc.get("hits@10")), str(sc.get("n_queries")))
        parts.append(t)
    te = r.get("top_edges") or []
    if te:
        t = Table(title=f"top {len(te)} edges (source -> target)", title_justify="left")
        for c, j in (("rank", "right"), ("source", "right"), ("target", "right"), ("score", "right"),
                     ("known", "left"), ("true", "left")):
            t.add_column(c, justify=j)
        for e in te:
            t.add_row(str(e["rank"]), str(e["source"]), str(e["target"]), fmt_num(e["score"]),
                      "yes" if e.get("known") else "", "" if e.get("true") is None else ("yes" if e["true"] else "no"))
        parts.append(t)
    parts.append(checks_table(r))
    parts.append(Text.assemble(("verdict: ", "bold"), verdict_text(r)))
    return parts


register("fadiag.edges/1", edges_tables)
