"""The audit family: its registry record and its per-checkpoint body (run by fadiag.run.sweep for one checkpoint or a
sweep)."""

from __future__ import annotations

import os

from ...registry import Family
from ...run.sweep import bar, load_subject, warn_half


def _audit(path: str, o: dict, progress=None):
    from .api import audit as run_audit, frozen_baseline as train_baseline
    from ...text import err

    subject = load_subject(path, o, progress, batches=o.get("batches"), batch_size=o.get("batch_size"))
    quiet = bool(o.get("quiet"))
    if subject.checkpoint.trusted and not quiet:
        err(f"fadiag: warning: {path}: loaded with --trust-checkpoint (arbitrary unpickling)")
    warn_half(subject, quiet)
    fb_acc = o.get("frozen_baseline_acc")
    fb_src = "given" if fb_acc is not None else None
    name = os.path.basename(path)
    if o.get("frozen_baseline") == "train":
        with bar(progress, f"training frozen baseline for {name}") as prog:
            fb_acc, fb_src = train_baseline(subject, seed=o.get("seed") or 0, progress=prog,
                                            trainable_last=o.get("trainable_blocks") or 0)
    from ...calibration import load as load_calibration

    cal = load_calibration(o["calibration"]) if o.get("calibration") else None
    with bar(progress, f"auditing {name}") as prog:
        rep = run_audit(subject, thresholds=o.get("thresholds"), headline_acc=o.get("headline_acc"),
                        frozen_baseline_acc=fb_acc, frozen_baseline_source=fb_src, growth_mode=o.get("growth"),
                        stability_layer=o.get("stability_layer"), progress=prog, calibration=cal)
    return rep, None  # the one-line verdict goes to stderr after the report (fadiag.cli.output.finish)



FAMILY = Family(
    name="audit", order=10, command="fadiag.families.audit.cli", report="fadiag.families.audit.report",
    body="fadiag.families.audit:_audit", api={"audit": "fadiag.families.audit.api"},
    forms={"table": "fadiag.families.audit.table:audit_tables", "markdown": "fadiag.families.audit.markdown:audit_form",
           "plot": "fadiag.families.audit.figure:audit_figure", "junit": "fadiag.render.junit:audit_layers"},
    spec_section="audit", spec_check="fadiag.spec:check_audit", spec_defaults={"growth": ("audit", "growth")})
