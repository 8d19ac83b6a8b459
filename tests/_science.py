"""docs/science.md and the JSON keys of a report it must name (tests/docs/test_science_doc.py and the conformance
test, tests/families/test_conformance.py)."""

from __future__ import annotations

import re

from _shipped import REPO

DOC = REPO / "docs" / "science.md"

#: Dotted paths (list items as []) whose CHILDREN are data names, not schema keys: option names, tensor
#: names, η values, head, feature and neuron names. Their grandchildren are schema keys again where the
#: pattern below does not also cover them.
DATA_KEYED = [
    r"settings", r"drift_per_tensor", r"layers\[\]\.nudging", r"per_head", r"per_head\.[^.]+\.[^.]+",
    r"trunk\.[^.]+", r"sensitivity\.mean_abs(\.[^.]+)?", r"sensitivity\.observation\.jacobian(\.[^.]+)?",
    r"truth_checks\.[^.]+", r"first_flagged",
]
_DATA = re.compile("^(?:" + "|".join(DATA_KEYED) + ")$")


def schema_keys(obj, path: str = "") -> set:
    """Every key of a report that belongs to its schema (data-named keys skipped; ``means.nudging@η`` ->
    ``nudging@``)."""
    out = set()
    if isinstance(obj, dict):
        data = bool(_DATA.match(path))
        for k, v in obj.items():
            if not data:
                out.add(k.split("@")[0] + "@" if path == "means" and "@" in k else k)
            out |= schema_keys(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list):
        for x in obj:
            out |= schema_keys(x, path + "[]")
    return out


def _named(key: str, text: str) -> bool:
    """A key counts as named when it appears in code quotes (`key`, or inside a quoted dotted path)."""
    end = "" if key.endswith("@") else r"(?![\w])"  # `nudging@η`: the η is part of the name
    return re.search(r"`[^`\n]*(?<![\w@])" + re.escape(key) + end + r"[^`\n]*`", text) is not None
