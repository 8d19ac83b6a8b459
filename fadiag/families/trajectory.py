"""The trajectory family's registry record."""

from __future__ import annotations

from ..registry import Family

FAMILY = Family(
    name="trajectory", order=90, command="fadiag.trajectory.cli", report="fadiag.trajectory.report",
    forms={"table": "fadiag.trajectory.render:trajectory_tables", "markdown": "fadiag.trajectory.render:trajectory_form",
           "plot": "fadiag.trajectory.render:trajectory_figure"})
