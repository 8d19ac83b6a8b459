"""Renderers: one module per output format, each ``render(reports: list[Report]) -> str``.

Renderers take typed reports (fadiag/reports/) and never compute or judge: every number and every judgement
(a flag, a layer below the floor, the verdict) is a field or a property of the report. A saved JSON dict is
read through ``fadiag.reports.from_dict`` first (``as_report``), so ``fadiag report`` re-renders a saved file
exactly as the live run would. ``Format`` lists every format; a test proves each member maps to a renderer.
"""

from __future__ import annotations

import enum
import importlib


class Format(str, enum.Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    markdown = "markdown"
    junit = "junit"
    github = "github"


_MODULES = {
    Format.table: "fadiag.render.table",
    Format.json: "fadiag.render.json_",
    Format.jsonl: "fadiag.render.jsonl",
    Format.markdown: "fadiag.render.markdown",
    Format.junit: "fadiag.render.junit",
    Format.github: "fadiag.render.github",
}


def renderer(fmt: Format | str):
    fmt = Format(fmt)
    return importlib.import_module(_MODULES[fmt]).render


def as_report(r):
    """A typed report: a Report as it is, a JSON dict (a saved report) read through the schema registry."""
    from ..reports import Report, from_dict

    return r if isinstance(r, Report) else from_dict(r)


def render(reports: list, fmt: Format | str, **options) -> str:
    """``reports``: Report objects (or saved JSON dicts). json/jsonl write a dict exactly as it came (a saved
    report re-rendered as JSON stays byte for byte what was saved); every other format reads typed reports."""
    fmt = Format(fmt)
    if fmt not in (Format.json, Format.jsonl):
        reports = [as_report(r) for r in reports]
    return renderer(fmt)(reports, **options)
