"""``--format json``: one object for one report, an array for several. Stable key order, no NaN."""

from __future__ import annotations

import json


def dumps(obj) -> str:
    # allow_nan=False: a stray NaN is a bug upstream (reports turn non-finite numbers into null).
    return json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False)


def render(reports: list, **_) -> str:
    return dumps(reports[0] if len(reports) == 1 else reports) + "\n"
