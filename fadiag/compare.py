"""``fadiag compare``: saved reports side by side, and a regression gate against a baseline report.

Reports are matched to baseline reports by checkpoint path, else by method_name, else by position.
A regression is a flag that was not raised in the baseline (false or skipped) and is raised now, or,
with ``max_rel_change``, a flag value whose relative change |v - v0| / max(|v0|, 1e-300) exceeds it.
Report schema "fadiag.compare/1".
"""

from __future__ import annotations

import math

from . import __version__
from .errors import InputError
from .report import clean

# Headline numbers shown side by side, per schema: (label, key or callable).
_ROWS = {
    "fadiag.audit/1": [
        ("method", lambda r: r.get("method_name")),
        ("headline acc", lambda r: r.get("headline_acc")),
        ("frozen baseline acc", lambda r: r.get("frozen_baseline_acc")),
        ("growth (a)", lambda r: r.get("growth")),
        ("||g_L|| (b)", lambda r: (r.get("bp_grad_norms") or [None])[-1]),
        ("stability (c)", lambda r: r.get("cross_batch_stability")),
        ("verdict", lambda r: r.get("verdict")),
    ],
}


def _label(r: dict, i: int) -> str:
    ck = r.get("checkpoint") or {}
    return r.get("method_name") or ck.get("path") or f"report {i}"


def _key(r: dict) -> str | None:
    return (r.get("checkpoint") or {}).get("path")


def _generic_rows(r: dict) -> list:
    return [(f"({f['id']}) {f['name']}", f.get("value")) for f in r.get("flags") or []] + [("verdict", r.get("verdict"))]


def compare_reports(reports: list, baseline: list | None = None, *, max_rel_change: float | None = None,
                    labels: list | None = None) -> dict:
    if not reports:
        raise InputError("nothing to compare", source="compare")
    schemas = {r.get("schema") for r in reports + (baseline or [])}
    if len(schemas) > 1:
        raise InputError(f"cannot compare reports of different kinds: {', '.join(sorted(map(str, schemas)))}",
                         source="compare")
    if max_rel_change is not None and (not math.isfinite(max_rel_change) or max_rel_change < 0):
        raise InputError(f"must be a finite number >= 0, got {max_rel_change}", source="--max-rel-change")
    schema = schemas.pop()
    labels = labels or [_label(r, i) for i, r in enumerate(reports)]
    row_defs = _ROWS.get(schema)
    rows = []
    if row_defs:
        for name, fn in row_defs:
            rows.append({"metric": name, "values": [fn(r) for r in reports]})
    else:
        names = [n for n, _ in _generic_rows(reports[0])]
        for j, name in enumerate(names):
            rows.append({"metric": name, "values": [(_generic_rows(r)[j][1] if j < len(_generic_rows(r)) else None)
                                                     for r in reports]})
    regressions = []
    if baseline is not None:
        by_path = {_key(b): b for b in baseline if _key(b)}
        by_method = {b.get("method_name"): b for b in baseline if b.get("method_name")}
        for i, r in enumerate(reports):
            b = by_path.get(_key(r)) or by_method.get(r.get("method_name")) or (
                baseline[i] if i < len(baseline) else None)
            if b is None:
                regressions.append({"report": labels[i], "flag": None, "reason": "no matching baseline report"})
                continue
            bflags = {f["id"]: f for f in b.get("flags") or []}
            for f in r.get("flags") or []:
                f0 = bflags.get(f["id"])
                if f.get("flagged") and not (f0 and f0.get("flagged")):
                    regressions.append({"report": labels[i], "flag": f["id"], "name": f["name"],
                                        "baseline_value": f0.get("value") if f0 else None, "value": f.get("value"),
                                        "reason": "newly flagged"})
                elif max_rel_change is not None and f0 is not None:
                    v, v0 = f.get("value"), f0.get("value")
                    if v is None or v0 is None:
                        continue
                    rel = abs(v - v0) / max(abs(v0), 1e-300)
                    if rel > max_rel_change:
                        regressions.append({"report": labels[i], "flag": f["id"], "name": f["name"],
                                            "baseline_value": v0, "value": v,
                                            "reason": f"relative change {rel:.3g} > {max_rel_change:g}"})
    flags = [{"id": "regression", "name": "regressed against the baseline", "flagged": bool(regressions)
              if baseline is not None else None, "value": float(len(regressions)), "threshold": 0.0,
              "detail": "; ".join(f"{g['report']}: " + (f"({g['flag']}) " if g['flag'] else "") + g['reason'] for g in regressions)
              if baseline is not None else "no --baseline given"}]
    return clean({
        "schema": "fadiag.compare/1", "fadiag_version": __version__, "compared_schema": schema,
        "labels": labels, "rows": rows, "regressions": regressions,
        "baseline": [_label(b, i) for i, b in enumerate(baseline)] if baseline is not None else None,
        "flags": flags,
        "verdict": ("regression: " + str(len(regressions)) + " finding(s)") if regressions else
        ("no regression" if baseline is not None else "compared"),
    })
