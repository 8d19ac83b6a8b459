"""The audit's declared quantities (fadiag.diagnostics.audit_quantities): the defaults, names and threshold
rules derive from the definitions; the orchestrator (fadiag.families.audit.api.audit) hands each quantity exactly what it
declares, from one pass per batch; a new definition shows up in the flags, thresholds and verdict with no other
edit. The numbers themselves are checked against slow references in tests/families/audit/test_protocol.py."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import fadiag
from fadiag.families.audit.api import audit, validate_thresholds
from fadiag.diagnostics import audit_quantities as Q
from fadiag.diagnostics import protocol as P
from fadiag.errors import ThresholdError
from fadiag.families.audit.report import AuditReport
from fadiag.reports.base import Flag, Threshold


def test_defaults_and_names_derive_from_the_definitions():
    # the values fadiag.audit/1 has always had, first and in its order (a new quantity's come after)
    assert list(Q.DEFAULT_THRESHOLDS.items())[:4] == [
        ("g_norm_floor", 1e-7), ("h_norm_explosion_ratio", 50.0), ("stability_drift_ceiling", 0.3),
        ("frozen_acc_margin_pp", 2.0)]
    assert list(Q.DEFAULT_THRESHOLDS) == [t.name for q in Q.QUANTITIES for t in q.thresholds]
    assert not hasattr(P, "DEFAULT_THRESHOLDS") and not hasattr(P, "NAMES")  # one definition, in Q
    assert list(Q.NAMES)[:6] == ["a", "b", "c", "d", "e", "f"] and list(Q.NAMES) == sorted(Q.NAMES)
    assert Q.NAMES["e"] == "non-finite values in the forward/backward pass"
    assert validate_thresholds(None) == Q.DEFAULT_THRESHOLDS
    assert Q.threshold_help().startswith("g_norm_floor, h_norm_explosion_ratio, stability_drift_ceiling, "
                                         "frozen_acc_margin_pp")


@pytest.mark.parametrize("name, value, needle", [
    ("g_norm_floor", 0, "g_norm_floor must be positive, got 0"),
    ("h_norm_explosion_ratio", -1, "must be positive"),
    ("stability_drift_ceiling", 1.5, "stability_drift_ceiling is a cosine ceiling in [-1, 1], got 1.5"),
    ("frozen_acc_margin_pp", -101, "frozen_acc_margin_pp is in percentage points, [-100, 100], got -101"),
    ("frozen_acc_margin_pp", True, "must be a finite number"),
    ("g_norm_flor", 1.0, "did you mean 'g_norm_floor'"),
])
def test_threshold_rules_come_from_the_declarations(name, value, needle):
    with pytest.raises(ThresholdError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        validate_thresholds({name: value})
    assert validate_thresholds({"stability_drift_ceiling": -1}, {"frozen_acc_margin_pp": 100})[
        "stability_drift_ceiling"] == -1.0


def test_the_metadata_imports_without_torch():
    code = ("import sys; from fadiag.diagnostics.audit_quantities import QUANTITIES, THRESHOLDS; "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules; assert len(QUANTITIES) >= 6")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_an_unknown_need_is_refused_at_definition():
    with pytest.raises(ValueError, match="unknown input"):
        Q.Quantity("z", "toy", ("hiddens", "activations_of_mars"), lambda i: {}, lambda v, t: None)


# --------------------------------------------------------------------------------- flag steps, by value

@pytest.mark.parametrize("q, seen, flagged, value, detail", [
    (Q.RESIDUAL_GROWTH, {"growth": math.inf, "growth_layer": 1, "growth_mode": "ratio_to_h0"}, True, None,
     "||h_0|| = 0: the ratio is undefined (zero embedding)"),
    (Q.RESIDUAL_GROWTH, {"growth": math.nan, "growth_layer": 2, "growth_mode": "per_block"}, True, None,
     "non-finite residual norm"),
    (Q.RESIDUAL_GROWTH, {"growth": 3.0, "growth_layer": 2, "growth_mode": "per_block",
                         "stages": [(0, 2), (2, 4)]}, False, 3.0,
     "max_l |h_{l+1}|/|h_l| = 3 at layer 2 (per stage: 2 stages of equal shape, each against its first state)"),
    (Q.BP_GRAD_FLOOR, {"bp_grad_norms": []}, True, None, "non-finite ||g_L||"),
    (Q.BP_GRAD_FLOOR, {"bp_grad_norms": [1.0, 1e-9]}, True, 1e-9, "||g_L|| = 1e-09"),
    (Q.STABILITY, {"cross_batch_stability": math.nan}, True, None, "non-finite stability"),
    (Q.FROZEN_MARGIN, {"headline_acc": 0.9, "frozen_baseline_acc": None}, None, None,
     "skipped: no frozen-blocks baseline (--frozen-baseline-acc or --frozen-baseline train)"),
    (Q.FROZEN_MARGIN, {"headline_acc": 0.5, "frozen_baseline_acc": 0.49}, True, pytest.approx(1.0),
     "0.5000 vs frozen 0.4900: +1.00 pp"),
    (Q.NONFINITE, {"nonfinite_count": 3}, True, 3.0,
     "3 non-finite value(s) in logits, hiddens, gradients or weights"),
    (Q.DEAD_BLOCKS, {"block_update_norms": [None, None], "all_dead": False, "n_dead": 0, "ratio": 1e-7}, None,
     0.0, "0 of 0 block(s) add less than 1e-07 x ||h_l||; N/A for 2 block(s) that change the stream's shape"),
])
def test_flag_steps(q, seen, flagged, value, detail):
    f = q.flag(seen, Q.DEFAULT_THRESHOLDS)
    assert (f.id, f.name, f.flagged, f.value, f.detail) == (q.id, Q.NAMES[q.id], flagged, value, detail)


# --------------------------------------------------------------------------------- the orchestrator

def _spy(calls: list) -> Q.Quantity:
    """A toy quantity: mean |logit| over every batch above a declared ceiling; records what it was given."""

    def compute(i):
        calls.append(dict(i))
        return {"mean_abs_logit": float(torch.cat(i["logits"]).abs().mean())}

    def flag(v, t):
        m = v["mean_abs_logit"]
        return Flag("z", "logits are huge", m > t["toy_logit_ceiling"], m, t["toy_logit_ceiling"], f"{m:.3g}")

    return Q.Quantity("z", "logits are huge", ("logits", "labels"), compute, flag,
                      (Threshold("toy_logit_ceiling", 1e6, positive=True),),
                      per_batch=lambda p: p.logits.shape[0])


def test_a_new_definition_joins_flags_thresholds_and_verdict(tiny_resmlp_ckpt, monkeypatch):
    subject = fadiag.load(str(tiny_resmlp_ckpt().ckpt))
    before = audit(subject)
    calls = []
    quantities = Q.QUANTITIES + (_spy(calls),)
    monkeypatch.setattr(Q, "QUANTITIES", quantities)
    monkeypatch.setattr(Q, "THRESHOLDS", tuple(t for q in quantities for t in q.thresholds))
    rep = audit(subject)
    (given,) = calls
    assert set(given) == {"logits", "labels", "per_batch"}  # exactly its needs, and its per-batch reductions
    assert len(given["logits"]) == len(subject.batches) == len(given["per_batch"])
    assert [f.id for f in rep.flags] == sorted(Q.NAMES) + ["z"]
    assert rep.thresholds["toy_logit_ceiling"] == 1e6 and rep.flag("z").flagged is False
    assert rep.to_dict()["flags"][-1]["name"] == "logits are huge"
    # the others are untouched
    assert rep.to_dict()["flags"][:-1] == before.to_dict()["flags"]
    low = audit(subject, thresholds={"toy_logit_ceiling": 1e-9})
    assert low.verdict.endswith("logits are huge") and low.flag("z").threshold == 1e-9
    with pytest.raises(ThresholdError, match="toy_logit_ceiling must be positive"):
        audit(subject, thresholds={"toy_logit_ceiling": 0})


def test_audit_returns_the_typed_report(tiny_resmlp_ckpt):
    rep = audit(fadiag.load(str(tiny_resmlp_ckpt().ckpt)))
    assert isinstance(rep, AuditReport) and rep.schema == "fadiag.audit/1"
    assert isinstance(rep.flags, tuple) and rep.verdict == rep.to_dict()["verdict"]
    back = AuditReport.from_dict(rep.to_dict())
    assert back.to_dict() == rep.to_dict()


def test_stability_detail_says_what_to_check():
    from fadiag.diagnostics.audit_quantities import stability_detail

    flagged = stability_detail(0.378, 0.3)
    for words in ("0.378", "> 0.3", "not trained to convergence", "few", "128", "(a), (b) or (d)",
                  "docs/science.md §1"):
        assert words in flagged, words
    assert stability_detail(0.1, 0.3) == "mean pairwise cosine of the batch-mean BP gradients = 0.1"
    assert "docs/science.md" not in stability_detail(0.3, 0.3)  # at the ceiling: not flagged, no advice
