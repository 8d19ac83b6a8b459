"""The relevance family: its registry record and its per-checkpoint body (run by fadiag.run.sweep for one checkpoint or
a sweep); its API (``api``), command (``cli``), report class (``report``) and table form (``table``) sit beside it
in this package."""

from __future__ import annotations

from ...registry import Family
from ...run.sweep import load_subject


def _relevance(path: str, o: dict, progress=None):
    from .api import relevance as run_relevance

    obs = o.get("observation")
    need = bool(o.get("sensitivity")) or (obs is not None and "," not in obs)  # a point needs no data
    subject = load_subject(path, o, need_data=need, labels="regression")
    return run_relevance(subject, feature_names=o.get("feature_names"), head_names=o.get("head_names"),
                         sensitivity=bool(o.get("sensitivity")), observation=o.get("observation"),
                         step_size_kind=o.get("step_sizes") or "auto"), None



FAMILY = Family(
    name="relevance", order=40, command="fadiag.families.relevance.cli", report="fadiag.families.relevance.report",
    body="fadiag.families.relevance:_relevance",
    api={"relevance": "fadiag.families.relevance.api", "relevance_report": "fadiag.diagnostics.relevance",
         "LearnerState": "fadiag.diagnostics.relevance"},
    forms={"table": "fadiag.families.relevance.table:relevance_tables",
           "markdown": "fadiag.families.relevance.markdown:relevance_form", "plot": "fadiag.families.relevance.figure:relevance_figure"},
    spec_section="relevance")
