"""The credit family: its registry record and its per-checkpoint body (run by fadiag.run.sweep for one checkpoint or a
sweep); its API (``api``), signal providers (``signals``), command (``cli``), report class (``report``) and table
form (``table``) sit beside it in this package."""

from __future__ import annotations

import os

from ...registry import Family
from ...run.sweep import bar, load_subject, warn_half


def _credit(path: str, o: dict, progress=None):
    from .api import credit as run_credit

    subject = load_subject(path, o, batches=1, batch_size=o.get("batch_size"))
    warn_half(subject, bool(o.get("quiet")))
    with bar(progress, f"credit metrics for {os.path.basename(path)}") as prog:
        return run_credit(subject, signal=o.get("signal"), init_path=o.get("init"), tensors_path=o.get("tensors"),
                          eps=o.get("eps"), n_dirs=o.get("n_dirs"), etas=o.get("eta"), seed=o.get("seed"),
                          thresholds=o.get("thresholds") or {}, progress=prog), None



FAMILY = Family(
    name="credit", order=20, command="fadiag.families.credit.cli", report="fadiag.families.credit.report",
    body="fadiag.families.credit:_credit", api={"credit": "fadiag.families.credit.api"},
    forms={"table": "fadiag.families.credit.table:credit_tables",
           "markdown": "fadiag.families.credit.markdown:credit_form", "plot": "fadiag.families.credit.figure:credit_figure"},
    spec_section="credit", spec_check="fadiag.families.credit.signals:check_spec",
    spec_defaults={"signal": ("credit", "signal"), "eps": ("credit", "eps"), "n_dirs": ("credit", "n_dirs"),
                   "eta": ("credit", "etas")})
