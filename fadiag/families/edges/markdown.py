"""``--format markdown`` for edges: the shared head and flags, the scoring against the truth and the top edges
as tables, then its remaining fields. Formatting only: the numbers and the flags are the report's."""

from __future__ import annotations

from ...render.markdown import MISSING, code, fields_table, flags_section, head, records_table


def edges_form(r) -> str:
    parts = head(r) + flags_section(r)
    p = r.params or {}
    parts.append(f"N = {r.n_nodes} nodes, M = {r.n_observations} observations over "
                 f"{r.n_blocks} blocks; {p.get('method')} on {p.get('where')}-norm signals "
                 f"({p.get('norm')} / {p.get('agg')}).")
    sc = r.scoring
    if sc:
        parts.append(f"## Scoring against the truth\n\nTruth: {code(sc.get('truth'))}; queries: {sc.get('queries')}."
                     "\n\n" + records_table([sc], ["mrr", "random_mrr", "hits@1", "hits@3", "hits@10", "n_queries"],
                                            ["MRR", "random MRR", "Hits@1", "Hits@3", "Hits@10", "queries"]))
    te = r.top_edges or []
    if te:
        rows = [{**e, "known": "yes" if e.get("known") else "no",
                 "true": MISSING if e.get("true") is None else ("yes" if e["true"] else "no")} for e in te]
        parts.append(f"## Top {len(te)} edges\n\n" + records_table(rows, ["rank", "source", "target", "score", "known",
                                                                            "true"]))
    parts += fields_table(r, skip={"method_name", "scoring", "top_edges", "n_nodes", "n_observations", "n_blocks"})
    return "\n\n".join(parts) + "\n"
