"""``fadiag calibrate``: thresholds derived from runs the user trusts (docs/science.md §1, "Calibration").

Input: audit reports of HEALTHY runs and of DEGENERATE (known-bad) runs, saved JSON or audited here. Per flag
(a)-(d), over the finite values: the healthy range and the degenerate range (min and max: the 0th and 100th
percentiles, so no healthy run is left outside), and a threshold put between the healthy extreme and the nearest
degenerate value beyond it: the geometric mean of the two for (a) and (b) (ratios and gradient norms spread over
decades), the arithmetic mean for (c) (a cosine) and (d) (percentage points). Its margin is the distance to each
side (a factor for (a)/(b), a difference for (c)/(d)). A flag no degenerate run crosses keeps the published
threshold when the healthy range is inside it, else the healthy extreme moved out by the default margin (``SLACK``);
a degenerate value nearer the healthy range than twice ``SLACK`` is not one this flag can tell apart, and is left to
the other flags. A degenerate run is *caught* when any calibrated flag fires on it; the calibration *separates* when
every degenerate run is caught and no healthy run is.

The domain written with each threshold: the families of the input models, and for (c) the batch sizes and the fewest
batches seen (its statistic depends on the batch layout; the others are per-sample medians).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...calibration import PUBLISHED, Calibration, FlagCalibration
from ...errors import InputError

#: flag -> (threshold direction: "above" flags when value > threshold, "below" when value < it; log scale?)
RULES = {"a": ("above", True), "b": ("below", True), "c": ("above", False), "d": ("below", False)}
#: with no degenerate value beyond the healthy range: how far out the threshold goes (a factor or a difference)
SLACK = {"a": 2.0, "b": 10.0, "c": 0.1, "d": 2.0}


@dataclass(frozen=True)
class Run:
    """One input: its label (file name), role (healthy/degenerate) and audit report."""

    label: str
    role: str
    report: object


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _values(runs: list, fid: str) -> list:
    out = []
    for r in runs:
        f = r.report.flag(fid)
        if f is not None and _finite(f.value):
            out.append(float(f.value))
    return out


def _mid(a: float, b: float, log: bool) -> float:
    return math.sqrt(a * b) if log and a > 0 and b > 0 else (a + b) / 2


def _margin(thr: float, edge: float, nearest: float | None, log: bool) -> str:
    def gap(x, y):
        return f"{max(x, y) / min(x, y):.3g}x" if log and x > 0 and y > 0 else f"{abs(x - y):.3g}"

    s = f"{gap(thr, edge)} from the healthy extreme"
    return s + (f", {gap(thr, nearest)} from the nearest degenerate value" if nearest is not None else
                ", no degenerate value beyond the healthy range")


def _shift(edge: float, by: float, above: bool, log: bool) -> float:
    """``edge`` moved outwards (away from the healthy side) by a factor (log) or a difference."""
    if log:
        return edge * by if above else edge / by
    return edge + by if above else edge - by


def threshold_for(fid: str, healthy: list, degenerate: list) -> tuple:
    """(threshold, margin text, every degenerate value beyond it?) for one flag (module doc). A degenerate value
    counts only when it lies at least twice the default margin (``SLACK``) beyond the healthy extreme, so that the
    threshold between them keeps ``SLACK`` on both sides; a run the flag cannot tell apart is left to the others."""
    direction, log = RULES[fid]
    published, slack = PUBLISHED.flags[fid].value, SLACK[fid]
    if not healthy:
        return published, "no healthy value: the published threshold", False
    above = direction == "above"
    edge = max(healthy) if above else min(healthy)
    far = _shift(edge, slack * slack if log else 2 * slack, above, log)
    beyond = [v for v in degenerate if (v >= far if above else v <= far)]
    nearest = (min(beyond) if above else max(beyond)) if beyond else None
    if nearest is not None:
        thr = _mid(edge, nearest, log)
    else:
        least = _shift(edge, slack, above, log)  # the published one, unless it leaves less than SLACK
        thr = published if (published >= least if above else published <= least) else least
    if fid == "c":
        thr = min(max(thr, -1.0), 1.0)
    return thr, _margin(thr, edge, nearest, log), len(beyond) == len(degenerate)


def _fires(fid: str, value, flagged, thr: float) -> bool:
    """Would the flag fire on this value under ``thr``? A non-finite value that flagged still flags."""
    if not _finite(value):
        return bool(flagged)
    return value > thr if RULES[fid][0] == "above" else value < thr


def _domain(runs: list, fid: str) -> dict:
    models = [((r.report.calibration or {}).get("model") or {}) for r in runs]
    fams = sorted({str(m.get("family") or "unknown") for m in models})
    sizes = [m.get("batch_size") for m in models if isinstance(m.get("batch_size"), int)]
    counts = [m.get("batches") for m in models if isinstance(m.get("batches"), int)]
    layout = ", ".join(sorted({f"{m.get('batches')} x {m.get('batch_size')}" for m in models}))
    d = {"families": tuple(fams), "layout": f"batches x batch size: {layout}"}
    if fid == "c" and sizes:
        d.update(batch_size=(min(sizes), max(sizes)), min_batches=min(counts) if counts else 2)
    return d


def derive(runs: list, name: str, flags: tuple = tuple(RULES)) -> tuple:
    """(Calibration, summary): per flag in ``flags`` the healthy and degenerate ranges and the threshold; the
    summary says, per run, which calibrated flags fire, and whether the calibration separates the runs."""
    healthy = [r for r in runs if r.role == "healthy"]
    degenerate = [r for r in runs if r.role == "degenerate"]
    if not healthy:
        raise InputError("needs at least one healthy run", source="fadiag calibrate")
    data = sorted({_data_name(r.report) for r in runs})
    out, rows = dict(PUBLISHED.flags), {}
    for fid in flags:
        hv, dv = _values(healthy, fid), _values(degenerate, fid)
        thr, margin, sep = threshold_for(fid, hv, dv)
        dom = _domain(runs, fid)
        out[fid] = FlagCalibration(
            fid, PUBLISHED.flags[fid].threshold, thr, ", ".join(dom["families"]), ", ".join(data), dom["layout"],
            dom["families"], dom.get("batch_size"), dom.get("min_batches", 1),
            (min(hv), max(hv)) if hv else None, (min(dv), max(dv)) if dv else None, margin)
        rows[fid] = {"healthy": hv, "degenerate": dv, "threshold": thr, "margin": margin, "separated": sep}
    per_run = []
    for r in runs:
        fired = [fid for fid in flags if (f := r.report.flag(fid)) is not None
                 and _fires(fid, f.value, f.flagged, out[fid].value)]
        per_run.append({"run": r.label, "role": r.role, "fires": fired})
    separates = all(bool(p["fires"]) == (p["role"] == "degenerate") for p in per_run)
    cal = Calibration(name, "fadiag calibrate", out)
    return cal, {"flags": rows, "runs": per_run, "separates": separates}


def _data_name(report) -> str:
    from pathlib import Path

    src = (report.data or {}).get("source") if isinstance(report.data, dict) else None
    return Path(str(src)).name if src else "unknown"


def provenance(runs: list, summary: dict) -> dict:
    """What the YAML records about its inputs: each run's label, role, checkpoint hash and the flags that fire."""
    fires = {p["run"]: p["fires"] for p in summary["runs"]}
    return {"separates": summary["separates"],
            "statistic": "healthy/degenerate ranges: min-max (0th-100th percentiles) of the finite values",
            "runs": [{"run": r.label, "role": r.role,
                      "sha256": ((r.report.checkpoint or {}).get("sha256") if isinstance(r.report.checkpoint, dict)
                                 else None), "fires": fires[r.label]} for r in runs]}
