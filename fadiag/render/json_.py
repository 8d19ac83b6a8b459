"""``--format json``: one object for one report, an array for several. Stable key order, no NaN."""

from __future__ import annotations

import json


def as_dict(r) -> dict:
    """The JSON object of a report (``to_dict()``); a dict (a saved report) as it is."""
    return r if isinstance(r, dict) else r.to_dict()


def dumps(obj) -> str:
    # allow_nan=False: a stray NaN is a bug upstream (reports turn non-finite numbers into null).
    return json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False)


def render(reports: list, **_) -> str:
    dicts = [as_dict(r) for r in reports]
    return dumps(dicts[0] if len(dicts) == 1 else dicts) + "\n"
