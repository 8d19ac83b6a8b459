"""Typed reports: the shared envelope and verdict rule (``base``) and one module per family.

``from_dict(d)`` reads any saved fadiag report through the schema registry; ``load_file(path)`` reads a JSON or
JSONL file of them. Family report modules register themselves on import (``_load_families``: fadiag.registry).
"""

from __future__ import annotations

from .base import (FLAGGED_PREFIX, NOTHING_FLAGGED, REGISTRY, Flag, Report, Threshold, clean, from_dict,
                   merge_thresholds, register, verdict_of)


def _load_families() -> None:
    """Every family's report module (fadiag.registry), each registering its Report subclasses."""
    from ..registry import load_reports

    load_reports()


def load_file(path) -> list:
    """Every report in a saved JSON (an object or an array) or JSONL file, validated; InputError otherwise."""
    import json
    from pathlib import Path

    from ..errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError("no such report file", source=str(p))
    text = p.read_text(encoding="utf-8", errors="replace")

    def no_nan(c):
        raise InputError(f"report holds {c}: fadiag writes non-finite numbers as null", source=str(p))

    try:
        obj = json.loads(text, parse_constant=no_nan)
        dicts = obj if isinstance(obj, list) else [obj]
    except json.JSONDecodeError:
        try:
            dicts = [json.loads(line, parse_constant=no_nan) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise InputError(f"not a JSON or JSONL report ({e.msg} at line {e.lineno})", source=str(p)) from None
    if not dicts:
        raise InputError("not a fadiag report (no 'schema' key starting with 'fadiag.')", source=str(p))
    return [from_dict(d, str(p)) for d in dicts]


__all__ = ["FLAGGED_PREFIX", "NOTHING_FLAGGED", "REGISTRY", "Flag", "Report", "Threshold", "clean", "from_dict",
           "load_file", "merge_thresholds", "register", "verdict_of"]
