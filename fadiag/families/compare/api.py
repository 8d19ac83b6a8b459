"""``fadiag compare``: saved reports side by side, and a regression gate against a baseline report.

The rows derive from the reports themselves, for every family alike: the family's headline numbers
(``Report.headline()``), one row per flag id (``(id) name``, its value), each per-layer series layer by layer
(``Report.series()``, ``residual_norms[l]``), then the verdict. A new diagnostic (a new flag) is a new row
with no edit here.

Reports are matched to baseline reports by checkpoint path, else by method_name, else by position.
A regression is a flag that was not raised in the baseline (false or skipped) and is raised now, or,
with ``max_rel_change``, a flag value whose relative change |v - v0| / max(|v0|, 1e-300) exceeds it.
Report schema "fadiag.compare/2" (docs/json.md).
"""

from __future__ import annotations

import math

from ... import __version__
from ...errors import InputError
from ...reports import Flag, Report, from_dict
from .report import CompareReport


def _label(r: Report, i: int) -> str:
    ck = r.checkpoint if isinstance(r.checkpoint, dict) else {}
    return getattr(r, "method_name", None) or ck.get("path") or f"report {i}"


def _key(r: Report) -> str | None:
    return (r.checkpoint if isinstance(r.checkpoint, dict) else {}).get("path")


def _union(lists) -> list:
    out = []
    for xs in lists:
        out += [x for x in xs if x not in out]
    return out


def compare_rows(reports: list) -> list:
    """``[{metric, values}]``: headline numbers, one row per flag id, per-layer series, the verdict."""
    rows = []
    heads = [dict(r.headline()) for r in reports]
    for name in _union(h.keys() for h in heads):
        rows.append({"metric": name, "values": [h.get(name) for h in heads]})
    flags = [{f.id: f for f in r.flags} for r in reports]
    for fid in _union(fl.keys() for fl in flags):
        name = next(fl[fid].name for fl in flags if fid in fl)
        rows.append({"metric": f"({fid}) {name}", "values": [fl[fid].value if fid in fl else None for fl in flags]})
    series = [r.series() for r in reports]
    for key in _union(s.keys() for s in series):
        for i in range(max(len(s.get(key) or []) for s in series)):
            rows.append({"metric": f"{key}[{i}]",
                         "values": [(s.get(key) or [])[i] if i < len(s.get(key) or []) else None for s in series]})
    rows.append({"metric": "verdict", "values": [r.verdict for r in reports]})
    return rows


def _match(r: Report, i: int, baseline: list) -> Report | None:
    by_path = {_key(b): b for b in baseline if _key(b)}
    by_method = {getattr(b, "method_name", None): b for b in baseline if getattr(b, "method_name", None)}
    return by_path.get(_key(r)) or by_method.get(getattr(r, "method_name", None)) or (
        baseline[i] if i < len(baseline) else None)


def _regressions(label: str, r: Report, b: Report, max_rel_change: float | None) -> list:
    out = []
    for f in r.flags:
        f0 = b.flag(f.id)
        if f.flagged and not (f0 and f0.flagged):
            out.append({"report": label, "flag": f.id, "name": f.name, "baseline_value": f0.value if f0 else None,
                        "value": f.value, "reason": "newly flagged"})
        elif max_rel_change is not None and f0 is not None and f.value is not None and f0.value is not None:
            rel = abs(f.value - f0.value) / max(abs(f0.value), 1e-300)
            if rel > max_rel_change:
                out.append({"report": label, "flag": f.id, "name": f.name, "baseline_value": f0.value,
                            "value": f.value, "reason": f"relative change {rel:.3g} > {max_rel_change:g}"})
    return out


def _regression_flag(regressions: list, gated: bool) -> Flag:
    detail = ("; ".join(f"{g['report']}: " + (f"({g['flag']}) " if g["flag"] else "") + g["reason"]
                        for g in regressions) if gated else "no --baseline given")
    return Flag("regression", "regressed against the baseline", bool(regressions) if gated else None,
                float(len(regressions)), 0.0, detail)


def _typed(reports) -> list:
    return [r if isinstance(r, Report) else from_dict(r, "compare") for r in reports]


def _kind(r) -> str:
    """"fadiag.audit" of a report or a saved dict (any schema number: a /1 file compares with a /2 one)."""
    return str(r.schema if isinstance(r, Report) else (r.get("schema") if isinstance(r, dict) else r)).split("/")[0]


def compare_reports(reports: list, baseline: list | None = None, *, max_rel_change: float | None = None,
                    labels: list | None = None) -> CompareReport:
    """``reports`` (and ``baseline``): Report objects, or saved JSON dicts (read through from_dict)."""
    if not reports:
        raise InputError("nothing to compare", source="compare")
    kinds = {_kind(r) for r in list(reports) + list(baseline or [])}
    if len(kinds) > 1:
        raise InputError(f"cannot compare reports of different kinds: {', '.join(sorted(kinds))}", source="compare")
    reports = _typed(reports)
    baseline = _typed(baseline) if baseline is not None else None
    if max_rel_change is not None and (not math.isfinite(max_rel_change) or max_rel_change < 0):
        raise InputError(f"must be a finite number >= 0, got {max_rel_change}", source="--max-rel-change")
    labels = labels or [_label(r, i) for i, r in enumerate(reports)]
    regressions = []
    for i, r in enumerate(reports if baseline is not None else []):
        b = _match(r, i, baseline)
        if b is None:
            regressions.append({"report": labels[i], "flag": None, "reason": "no matching baseline report"})
        else:
            regressions += _regressions(labels[i], r, b, max_rel_change)
    return CompareReport(
        fadiag_version=__version__, compared_schema=reports[0].schema, labels=labels, rows=compare_rows(reports),
        regressions=regressions, baseline=[_label(b, i) for i, b in enumerate(baseline)] if baseline is not None
        else None, flags=(_regression_flag(regressions, baseline is not None),))
