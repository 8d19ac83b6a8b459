"""The lint family: its registry record; its API (``api``), command (``cli``), report class (``report``) and
table and markdown forms (``table``, ``markdown``) sit beside it in this package."""

from __future__ import annotations

from ...registry import Family

FAMILY = Family(
    name="lint", order=60, command="fadiag.families.lint.cli", report="fadiag.families.lint.report",
    forms={"table": "fadiag.families.lint.table:lint_tables",
           "markdown": "fadiag.families.lint.markdown:lint_form"})
