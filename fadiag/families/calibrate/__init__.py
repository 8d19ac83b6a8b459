"""The calibrate family: its registry record; its API (``api``: ranges, thresholds, margins) and command (``cli``)
sit beside it in this package."""

from __future__ import annotations

from ...registry import Family

FAMILY = Family(
    name="calibrate", order=15, command="fadiag.families.calibrate.cli")
