"""``--format jsonl``: one compact JSON object per line, one line per report (``jq -r .verdict``)."""

from __future__ import annotations

import json

from .json_ import as_dict


def render(reports: list, **_) -> str:
    return "".join(json.dumps(as_dict(r), allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for r in reports)
