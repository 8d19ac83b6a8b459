"""Hand-made audit reports for the renderer golden files (the pip-audit pattern).

Every number here is written in this file, not computed by fadiag: a golden file rendered from these
changes only when a renderer changes. Whether fadiag computes the right numbers is the business of each
diagnostic's reference test (tests/families/audit/test_protocol.py, tests/families/credit/test_credit.py, ...), never of a golden file.
"""

from __future__ import annotations

import copy

THRESHOLDS = {"g_norm_floor": 1e-07, "h_norm_explosion_ratio": 50.0, "stability_drift_ceiling": 0.3,
              "frozen_acc_margin_pp": 2.0}


def _flag(id_, name, flagged, value, threshold, detail):
    return {"id": id_, "name": name, "flagged": flagged, "value": value, "threshold": threshold, "detail": detail}


def _audit(method, norms, grads, stability, acc, frozen, flags, verdict, sha, updates) -> dict:
    return {
        "schema": "fadiag.audit/1",
        "fadiag_version": "0.0.0-test",
        "method_name": method,
        "notes": f"hand-made {method} fixture: L=4, d=32",
        "residual_norms": norms,
        "bp_grad_norms": grads,
        "stability_layer": 2,
        "cross_batch_stability": stability,
        "headline_acc": acc,
        "frozen_baseline_acc": frozen,
        "verdict": verdict,
        "thresholds": dict(THRESHOLDS),
        "flags": flags,
        "checkpoint": {"path": f"runs/{method.lower()}.pt", "sha256": sha * 64, "format": "torch", "trusted": False},
        "data": {"source": "runs/test.npz", "batches": 8, "batch_size": 128, "seed": 0, "shuffle": False},
        "growth": norms[-1] / norms[0],
        "growth_mode": "ratio_to_h0",
        "headline_acc_source": "computed",
        "frozen_baseline_source": "spec",
        "weight_dtypes": ["float32"],
        "nonfinite_count": 0,
        "spec": f"runs/{method.lower()}.yaml",
        "block_update_norms": updates,
        "median": "lower",
    }


DFA = _audit(
    "DFA", [1000.0, 4.0e5, 8.0e5, 1.2e6, 2.0e6], [5.0e-5, 1.0e-7, 8.0e-8, 6.0e-8, 4.0e-8], 0.125, 0.25, 0.5,
    [_flag("a", "residual stream exploded", True, 2000.0, 50.0, "max_l |h_l|/|h_0| = 2000 at layer 4"),
     _flag("b", "BP grad at numerical floor", True, 4.0e-8, 1e-07, "||g_L|| = 4.00e-08"),
     _flag("c", "BP grad direction is drift-dominated", False, 0.125, 0.3, "mean pairwise cosine = 0.125"),
     _flag("d", "deep blocks fail to beat frozen-random baseline", True, -25.0, 2.0, "0.2500 vs frozen 0.5000: -25.00 pp"),
     _flag("e", "non-finite values in the forward/backward pass", False, 0.0, 0.0,
           "0 non-finite value(s) in logits, hiddens, gradients or weights"),
     _flag("f", "residual blocks contribute nothing", False, 0.0, 4.0, "0 of 4 block(s) add less than 1e-07 x ||h_l||")],
    "needs walk-back: residual stream exploded; BP grad at numerical floor; "
    "deep blocks fail to beat frozen-random baseline",
    "d", [4.0e5, 4.0e5, 4.0e5, 8.0e5])

BP = _audit(
    "BP", [8.0, 10.0, 12.0, 14.0, 16.0], [4.0e-2, 2.0e-2, 1.0e-2, 5.0e-3, 2.5e-3], -0.0625, 0.75, 0.5,
    [_flag("a", "residual stream exploded", False, 2.0, 50.0, "max_l |h_l|/|h_0| = 2 at layer 4"),
     _flag("b", "BP grad at numerical floor", False, 2.5e-3, 1e-07, "||g_L|| = 2.50e-03"),
     _flag("c", "BP grad direction is drift-dominated", False, -0.0625, 0.3, "mean pairwise cosine = -0.0625"),
     _flag("d", "deep blocks fail to beat frozen-random baseline", False, 25.0, 2.0, "0.7500 vs frozen 0.5000: 25.00 pp"),
     _flag("e", "non-finite values in the forward/backward pass", False, 0.0, 0.0,
           "0 non-finite value(s) in logits, hiddens, gradients or weights"),
     _flag("f", "residual blocks contribute nothing", False, 0.0, 4.0, "0 of 4 block(s) add less than 1e-07 x ||h_l||")],
    "trustworthy", "b", [2.0, 2.0, 2.0, 2.0])


def audit_fixture(name: str) -> dict:
    """A fresh deep copy of the hand-made "dfa" or "bp" audit report."""
    return copy.deepcopy({"dfa": DFA, "bp": BP}[name])
