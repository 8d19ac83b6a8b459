"""Table view of ``fadiag edges``: summary, scoring against truth with the random baseline, top-k edges."""

from __future__ import annotations

from rich.text import Text

from ...render.table import add_columns, checks_table, fmt_column, table, verdict_row


def edges_tables(r) -> list:
    p = r.params or {}
    head = Text(f"fadiag edges: {(r.checkpoint or {}).get('path')}  N = {r.n_nodes} nodes, "
                f"M = {r.n_observations} observations, {p.get('method')} on {p.get('where')}-norm "
                f"signals ({p.get('norm')}/{p.get('agg')})"
                + (f", bootstrap {p['bootstrap']}x{p['samples']} (seed {p['seed']})" if p.get("bootstrap") else ""),
                style="bold")
    parts = [head]
    sc = r.scoring
    if sc:
        parts.append(Text(f"scoring against {sc.get('truth')} ({sc.get('queries')})"))
        t = table("scoring")
        add_columns(t, [(c, "num") for c in ("MRR", "random MRR", "Hits@1", "Hits@3", "Hits@10", "queries")])
        t.add_row(*fmt_column([sc.get(k) for k in ("mrr", "random_mrr", "hits@1", "hits@3", "hits@10")]),
                  str(sc.get("n_queries")))
        parts.append(t)
    te = r.top_edges or []
    if te:
        t = table(f"top {len(te)} edges (source -> target)")
        add_columns(t, (("rank", "num"), ("source", "num"), ("target", "num"), ("score", "num"), ("known", "key"),
                        ("true", "key")))
        for e, score in zip(te, fmt_column([e["score"] for e in te])):
            t.add_row(str(e["rank"]), str(e["source"]), str(e["target"]), score,
                      "yes" if e.get("known") else "", "" if e.get("true") is None else ("yes" if e["true"] else "no"))
        parts.append(t)
    parts.append(checks_table(r))
    parts.append(verdict_row(r))
    return parts
