"""The lint family's registry record."""

from __future__ import annotations

from ..registry import Family

FAMILY = Family(
    name="lint", order=60, command="fadiag.cli.lint", report="fadiag.reports.lint",
    forms={"table": "fadiag.render.table_lint:lint_tables", "markdown": "fadiag.render.markdown_families:lint_form"})
