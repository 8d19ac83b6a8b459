"""The edges family: its registry record and its per-checkpoint body (run by fadiag.run.sweep for one checkpoint or a
sweep); its API (``api``), edge-list and matrix files (``files``), command (``cli``), report class (``report``) and
table form (``table``) sit beside it in this package."""

from __future__ import annotations

import os

from ...registry import Family
from ...run.sweep import bar, load_subject


#: the options of ``fadiag edges`` handed to ``api.edges`` as they are (when given)
EDGES_KEYS = ("method", "row_chunk", "bootstrap", "samples", "penalty", "scale_by_act_mean", "truth", "held_out",
              "where", "norm", "agg", "loss", "ties", "known", "spool", "max_memory", "threads")


def _edges(path: str, o: dict, progress=None):
    """(report, W): the evidence matrix too, for the one-checkpoint outputs (--matrix, --edges, --plot)."""
    from .api import edges as run_edges

    loss = o.get("loss")
    subject = load_subject(path, o, batches=o.get("batches"), batch_size=o.get("batch_size"),
                    labels=lambda sp: "class" if (loss or sp.edges.loss) == "ce" else "regression")
    with bar(progress, f"edges for {os.path.basename(path)}") as prog:
        return run_edges(subject, top=o.get("top", 20), seed=o.get("seed") or 0, progress=prog,
                         **{k: o.get(k) for k in EDGES_KEYS if o.get(k) is not None})



FAMILY = Family(
    name="edges", order=30, command="fadiag.families.edges.cli", report="fadiag.families.edges.report",
    body="fadiag.families.edges:_edges",
    api={"edges": "fadiag.families.edges.api", "edge_evidence": "fadiag.diagnostics.edges", "mrr": "fadiag.diagnostics.edges"},
    forms={"table": "fadiag.families.edges.table:edges_tables", "markdown": "fadiag.families.edges.markdown:edges_form"},
    spec_section="edges", spec_check="fadiag.spec:check_edges",
    spec_defaults={k: ("edges", k) for k in ("method", "where", "norm", "agg", "loss", "penalty")})
