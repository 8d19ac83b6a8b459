"""``--format jsonl``: one compact JSON object per line, one line per report (``jq -r .verdict``)."""

from __future__ import annotations

import json


def render(reports: list, **_) -> str:
    return "".join(json.dumps(r, allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for r in reports)
