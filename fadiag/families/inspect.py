"""The inspect family's registry record."""

from __future__ import annotations

from ..registry import Family

FAMILY = Family(
    name="inspect", order=50, command="fadiag.cli.inspect", report="fadiag.reports.inspect", api={"inspect_checkpoint": "fadiag.inspect"},
    forms={"table": "fadiag.render.table_inspect:inspect_tables", "markdown": "fadiag.render.markdown_families:inspect_form"})
