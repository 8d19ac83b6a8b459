"""``fadiag trajectory``'s work: the run's checkpoints in step order (fadiag.families.trajectory.steps), each audited by the
sweep machinery (fadiag.run.sweep.run_sweep with kind "audit": the same per-checkpoint body as ``fadiag audit``,
one model in memory at a time per process, ``--jobs`` and ``--resume`` as in sweeps), then one report.
torch-free at import time.
"""

from __future__ import annotations

from ...errors import InputError
from .first import first_flagged
from .report import TrajectoryReport, point_from_audit

#: what must be the same at every step for the steps to be compared (the same batches, the same thresholds)
SAME = ("data", "thresholds", "growth_mode", "stability_layer")


def _same(audits: list, rows: list) -> None:
    for k in SAME:
        v0 = audits[0].get(k)
        for a, (_, _, path) in zip(audits[1:], rows[1:]):
            if a.get(k) != v0:
                raise InputError(f"audited with a different {k} than {rows[0][2]} ({a.get(k)!r} vs {v0!r}): the "
                                 "steps of a trajectory must be audited on the same batches with the same settings; "
                                 "pass one --spec (and --data) for the whole run", source=path)


def trajectory_flags(points: list, first: dict) -> tuple:
    """The report's flags: one per audit flag id, flagged when it fires at any step (value: that first step)."""
    from ...reports.base import Flag

    out = []
    for fid, hit in first.items():
        names = [f.get("name") for p in points for f in p["flags"] if f["id"] == fid]
        if hit is None:
            skipped = all(f.get("flagged") is None for p in points for f in p["flags"] if f["id"] == fid)
            out.append(Flag(fid, names[0] if names else fid, None if skipped else False, None, None,
                            "skipped at every step" if skipped else f"never fires in {len(points)} steps"))
        else:
            where = f", layer {hit['layer']}" if hit.get("layer") is not None else ""
            out.append(Flag(fid, hit["name"], True, float(hit["step"]), None,
                            f"first fires at step {hit['step']}{where}"))
    return tuple(out)


def build_report(rows: list, audits: list) -> TrajectoryReport:
    """The report from [(step, step_source, path)] and their audit report dicts (same order)."""
    _same(audits, rows)
    points = [point_from_audit(a, s, src) for (s, src, _), a in zip(rows, audits)]
    th = audits[0].get("thresholds") or {}
    first = first_flagged(points, th)
    a0 = audits[0]
    return TrajectoryReport(method_name=a0.get("method_name") or "", steps=[p["step"] for p in points], points=points,
                            first_flagged=first, thresholds=th, flags=trajectory_flags(points, first),
                            fadiag_version=a0.get("fadiag_version", ""), data=a0.get("data"), spec=a0.get("spec"))


def run(paths, opts: dict, *, jobs: int = 1, resume: str | None = None, scheduler=None, progress=None,
        on_step=None) -> TrajectoryReport:
    """Audit every checkpoint of a run (``paths``: files, model folders, run folders) and build the report."""
    from ...run.sweep import run_sweep
    from .steps import run_steps

    rows = run_steps(paths, trust=bool(opts.get("trust")))
    audits = run_sweep("audit", [r[2] for r in rows], opts, jobs=jobs, resume=resume, scheduler=scheduler,
                       progress=progress, on_report=on_step)
    return build_report(rows, audits)
