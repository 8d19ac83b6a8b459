"""The calibrate family's registry record."""

from __future__ import annotations

from ..registry import Family

FAMILY = Family(
    name="calibrate", order=15, command="fadiag.cli.calibrate",
    forms={})
