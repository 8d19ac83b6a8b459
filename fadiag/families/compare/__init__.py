"""The compare family: its registry record; its API (``api``), command (``cli``), report class (``report``) and
table and markdown forms (``table``, ``markdown``) sit beside it in this package."""

from __future__ import annotations

from ...registry import Family

FAMILY = Family(
    name="compare", order=80, command="fadiag.families.compare.cli", report="fadiag.families.compare.report",
    forms={"table": "fadiag.families.compare.table:compare_tables",
           "markdown": "fadiag.families.compare.markdown:compare_form"})
