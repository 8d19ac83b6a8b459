"""Renderers: one module per output format, each ``render(reports: list[dict]) -> str``.

Renderers never compute: they format the ``to_dict()`` form of reports (so ``fadiag report`` can
re-render a saved JSON file exactly as the live run would). ``Format`` lists every format; a test proves
each member maps to a renderer.
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


def _bridge(reports: list) -> list:
    """TEMPORARY (redesign in flight): typed reports in, the renderers' old dicts out. Removed when every
    renderer takes typed reports."""
    return [r.to_dict() if hasattr(r, "to_dict") else r for r in reports]


def render(reports: list, fmt: Format | str, **options) -> str:
    return renderer(fmt)(_bridge(reports), **options)
