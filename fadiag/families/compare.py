"""The compare family's registry record."""

from __future__ import annotations

from ..registry import Family

FAMILY = Family(
    name="compare", order=80, command="fadiag.cli.compare", report="fadiag.reports.compare",
    forms={"table": "fadiag.render.table_compare:compare_tables", "markdown": "fadiag.render.markdown_families:compare_form"})
