"""``fadiag.compat.protocol.diagnose`` and the reference's signatures (issue 27), against a faithful rewrite of
the reference protocol's ``diagnose`` and report (tests/families/audit/test_upstream_protocol.py holds the per-layer
functions): (a) and (b) on the first batch, (c) over all batches, one pass per function call (2 + K passes),
the reference's own flag rules (``max/h0 > ratio``, ``g_L < floor``, ``c > ceiling``, margin in pp), and its
report's dict and printout built line by line here.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

import fadiag
from fadiag.compat import protocol as CP

from conftest import EXAMPLES
from test_upstream_protocol import REL, SHIPPED, ref_bp_grad_norms, ref_residual_norms, ref_stability

NAMES = ("residual stream exploded", "BP grad at numerical floor", "BP grad direction is drift-dominated",
         "deep blocks fail to beat frozen-random baseline")
TH = {"g_norm_floor": 1e-7, "h_norm_explosion_ratio": 50.0, "stability_drift_ceiling": 0.30,
      "frozen_acc_margin_pp": 2.0}


def ref_diagnose(model, batches, method_name, headline_acc, frozen_baseline_acc=None, layer_index=None,
                 notes="", loss_fn=F.cross_entropy) -> dict:
    """The reference's diagnose + report: its dict (key order included), verdict and printout."""
    x0, y0 = batches[0]
    hs = ref_residual_norms(model, x0)
    gs = ref_bp_grad_norms(model, x0, y0, loss_fn)
    layer = max(1, len(hs) // 2) if layer_index is None else layer_index
    c = ref_stability(model, batches, layer, loss_fn)
    growth = max(hs) / hs[0]
    rows = [("a", growth > TH["h_norm_explosion_ratio"], growth, TH["h_norm_explosion_ratio"]),
            ("b", gs[-1] < TH["g_norm_floor"], gs[-1], TH["g_norm_floor"]),
            ("c", c > TH["stability_drift_ceiling"], c, TH["stability_drift_ceiling"])]
    if frozen_baseline_acc is None:
        rows.append(("d", None, None, TH["frozen_acc_margin_pp"]))
    else:
        margin = (headline_acc - frozen_baseline_acc) * 100.0
        rows.append(("d", margin < TH["frozen_acc_margin_pp"], margin, TH["frozen_acc_margin_pp"]))
    flagged = [NAMES[i] for i, r in enumerate(rows) if r[1]]
    verdict = "trustworthy" if not flagged else "needs walk-back: " + "; ".join(flagged)
    d = {"method_name": method_name, "notes": notes, "residual_norms": hs, "bp_grad_norms": gs,
         "stability_layer": layer, "cross_batch_stability": c, "headline_acc": headline_acc,
         "frozen_baseline_acc": frozen_baseline_acc, "verdict": verdict, "thresholds": dict(TH),
         "flags": [{"id": r[0], "name": NAMES[i], "flagged": r[1], "value": r[2], "threshold": r[3]}
                   for i, r in enumerate(rows)]}
    lines = ["=== Diagnostic report: " + method_name + " ===", "verdict: " + verdict]
    for i, r in enumerate(rows):
        state = "skipped" if r[1] is None else ("FLAG" if r[1] else "ok")
        value = "n/a" if r[2] is None else format(r[2], ".4g")
        lines.append("(" + r[0] + ") " + NAMES[i] + ": value " + value + " (threshold " + format(r[3], ".4g")
                     + ") -> " + state)
    if notes:
        lines.append("notes: " + notes)
    return {"dict": d, "verdict": verdict, "printout": "\n".join(lines)}


def _approx_equal(got, want):
    if isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            _approx_equal(got[k], want[k])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            _approx_equal(a, b)
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=REL, abs=1e-6)
    else:
        assert got == want and type(got) is type(want)


@pytest.mark.parametrize("name", SHIPPED)
def test_diagnose_equals_the_reference_on_the_shipped_examples(name):
    subject = fadiag.load(str(EXAMPLES / name))
    m, batches = subject.model, subject.batches
    acc = fadiag.audit(subject).headline_acc
    frozen = 0.502 if "bp" in name else 0.35
    for args in ((name, acc, frozen), (name, acc)):
        ref = ref_diagnose(m, batches, *args, notes="shipped")
        rep = CP.diagnose(m, batches, *args, notes="shipped")
        assert rep.verdict == ref["verdict"]
        _approx_equal(rep.to_dict(), ref["dict"])
        assert str(rep) == ref["printout"] == rep.summary()
    # positional layer_index and loss_fn, in the reference's positions
    lf = lambda logits, y: F.cross_entropy(logits, y, label_smoothing=0.2)  # noqa: E731
    ref = ref_diagnose(m, batches, name, 0.5, 0.4, 1, "", lf)
    rep = CP.diagnose(m, batches, name, 0.5, 0.4, 1, None, "", lf)
    assert rep.stability_layer == 1 and rep.verdict == ref["verdict"]
    _approx_equal(rep.to_dict(), ref["dict"])
    assert all(p.grad is None for p in m.parameters()) and not m.training


def test_loss_fn_and_layer_index_take_the_reference_positions():
    subject = fadiag.load(str(EXAMPLES / "resmlp_dfa.pt"))
    m, batches = subject.model, subject.batches
    x, y = batches[0]
    # F.cross_entropy positionally is loss_fn, not fadiag's median
    assert CP.bp_grad_norms(m, x, y, F.cross_entropy) == pytest.approx(ref_bp_grad_norms(m, x, y), rel=REL)
    summed = lambda logits, t: F.cross_entropy(logits, t, reduction="sum")  # noqa: E731
    want = ref_bp_grad_norms(m, x, y, summed)
    got = CP.bp_grad_norms(m, x, y, loss_fn=summed)
    assert got == pytest.approx(want, rel=REL)
    assert got[-1] / CP.bp_grad_norms(m, x, y)[-1] == pytest.approx(x.shape[0], rel=1e-5)  # sum = B x mean
    c = CP.cross_batch_direction_stability(m, batches, 2, summed)
    assert c == pytest.approx(ref_stability(m, batches, 2, summed), rel=REL, abs=1e-6)
    assert CP.cross_batch_direction_stability(m, batches, layer_index=2) == pytest.approx(
        ref_stability(m, batches, 2), rel=REL, abs=1e-6)
    with pytest.raises(ValueError, match="scalar"):
        CP.bp_grad_norms(m, x, y, lambda logits, t: F.cross_entropy(logits, t, reduction="none"))
    with pytest.raises(ValueError, match="layer_index"):
        CP.cross_batch_direction_stability(m, batches, 99)
    with pytest.raises(ValueError, match="2 disjoint"):
        CP.diagnose(m, batches[:1], "x", 0.5)


def test_signatures_are_the_references_with_fadiags_extras_keyword_only():
    def params(fn):
        ps = inspect.signature(fn).parameters.values()
        return ([p.name for p in ps if p.kind is p.POSITIONAL_OR_KEYWORD],
                [p.name for p in ps if p.kind is p.KEYWORD_ONLY])

    assert params(CP.residual_norms) == (["model", "x"], ["median"])
    assert params(CP.bp_grad_norms) == (["model", "x", "y", "loss_fn"], ["median"])
    assert params(CP.cross_batch_direction_stability) == (["model", "batches", "layer_index", "loss_fn"], [])
    assert params(CP.diagnose) == (["model", "batches", "method_name", "headline_acc", "frozen_baseline_acc",
                                    "layer_index", "thresholds", "notes", "loss_fn"], ["median", "growth_mode"])
    assert inspect.signature(CP.bp_grad_norms).parameters["loss_fn"].default is F.cross_entropy
    assert params(CP.DiagnosticReport) == (["method_name", "residual_norms", "bp_grad_norms", "stability_layer",
                                            "cross_batch_stability", "headline_acc", "frozen_baseline_acc", "notes",
                                            "thresholds"], ["growth_mode"])
    with pytest.raises(TypeError):
        CP.DiagnosticReport("x", [1.0], [1.0], 1, 0.0, 0.5, None, "", CP.DiagnosticThresholds(), "per_block")


def test_printout_of_degenerate_numbers_never_passes():
    rep = CP.DiagnosticReport("nan", [float("nan"), 1.0], [1.0, 1.0], 1, 0.0, 0.5)
    text = str(rep)
    assert "verdict: needs walk-back: residual stream exploded" in text
    assert "(a) residual stream exploded: value n/a (threshold 50) -> FLAG" in text
    assert "(d) deep blocks fail to beat frozen-random baseline: value n/a (threshold 2) -> skipped" in text
    assert math.isnan(rep.residual_norms[0]) and "notes" not in text
