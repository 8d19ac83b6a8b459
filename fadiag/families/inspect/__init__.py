"""The inspect family: its registry record; its API (``api``), command (``cli``), report class (``report``) and
table and markdown forms (``table``, ``markdown``) sit beside it in this package."""

from __future__ import annotations

from ...registry import Family

FAMILY = Family(
    name="inspect", order=50, command="fadiag.families.inspect.cli", report="fadiag.families.inspect.report",
    api={"inspect_checkpoint": "fadiag.families.inspect.api"},
    forms={"table": "fadiag.families.inspect.table:inspect_tables",
           "markdown": "fadiag.families.inspect.markdown:inspect_form"})
