"""fadiag audit and fadiag.compat.protocol against a faithful reimplementation of the reference protocol.

The reference (protocol/diagnostics.py + report.py) is re-written here as it runs: one model call with
``return_hidden=True``, ``retain_grad`` on every hidden state, ``loss.backward()`` of the mean CE, and
``torch.median`` (the LOWER median) of ``h.norm(dim=-1)`` per layer, all in float32, one layer at a time in
a Python loop. On the shipped examples every per-layer number must agree to 1e-6 relative; the textbook
midpoint median misses by up to ~3e-2, so the check can fail.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

import fadiag
from fadiag.compat import protocol as CP

from conftest import EXAMPLES

SHIPPED = ["resmlp_bp.pt", "resmlp_dfa.pt", "resmlp_bp_init.pt", "resmlp_dfa_init.pt"]
REL = 1e-6


def _tok(h):
    return h[:, 0] if h.dim() == 3 else h


def ref_residual_norms(model, x) -> list:
    model.eval()
    with torch.no_grad():
        _, hs = model(x, return_hidden=True)
    out = []
    for h in hs:
        out.append(torch.median(_tok(h).norm(dim=-1)).item())
    return out


def _ref_grads(model, x, y, loss_fn=F.cross_entropy) -> list:
    model.eval()
    logits, hs = model(x, return_hidden=True)
    for h in hs:
        h.retain_grad()
    loss = loss_fn(logits, y)
    loss.backward()
    grads = [_tok(h.grad).detach().clone() for h in hs]
    model.zero_grad(set_to_none=True)
    return grads


def ref_bp_grad_norms(model, x, y, loss_fn=F.cross_entropy) -> list:
    out = []
    for g in _ref_grads(model, x, y, loss_fn):
        out.append(torch.median(g.norm(dim=-1)).item())
    return out


def ref_stability(model, batches, layer, loss_fn=F.cross_entropy) -> float:
    dirs = []
    for x, y in batches:
        g = _ref_grads(model, x, y, loss_fn)[layer]
        m = g.mean(dim=0)
        dirs.append(m / m.norm() if m.norm() > 0 else m)
    dots = [float(dirs[i] @ dirs[j]) for i, j in itertools.combinations(range(len(dirs)), 2)]
    return sum(dots) / len(dots)


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request):
    subject = fadiag.load(str(EXAMPLES / request.param))
    return request.param, subject


def test_audit_per_layer_numbers_equal_the_reference(shipped):
    name, subject = shipped
    rep = fadiag.audit(subject)
    x0, y0 = subject.batches[0]
    assert rep.median == "lower"
    assert rep.residual_norms == pytest.approx(ref_residual_norms(subject.model, x0), rel=REL)
    assert rep.bp_grad_norms == pytest.approx(ref_bp_grad_norms(subject.model, x0, y0), rel=REL)
    ref_c = ref_stability(subject.model, subject.batches, rep.stability_layer)
    assert rep.cross_batch_stability == pytest.approx(ref_c, rel=REL, abs=1e-6)
    # The midpoint median (fadiag's old default) is what a user would have seen disagree.
    mid = fadiag.audit(subject, median="midpoint")
    worst = max(abs(a - b) / abs(b) for a, b in zip(mid.residual_norms + mid.bp_grad_norms,
                                                    rep.residual_norms + rep.bp_grad_norms))
    assert worst > 1e-4, name


def test_compat_functions_equal_the_reference(shipped):
    _, subject = shipped
    m = subject.model
    x0, y0 = subject.batches[0]
    assert CP.residual_norms(m, x0) == pytest.approx(ref_residual_norms(m, x0), rel=REL)
    assert CP.bp_grad_norms(m, x0, y0) == pytest.approx(ref_bp_grad_norms(m, x0, y0), rel=REL)
    l_star = max(1, (len(m.blocks) + 1) // 2)
    assert CP.cross_batch_direction_stability(m, subject.batches) == pytest.approx(
        ref_stability(m, subject.batches, l_star), rel=REL, abs=1e-6)
    assert CP.cross_batch_direction_stability(m, subject.batches, layer_index=0) == pytest.approx(
        ref_stability(m, subject.batches, 0), rel=REL, abs=1e-6)
    assert all(p.grad is None for p in m.parameters())  # .grad buffers untouched
    assert not m.training


def test_cli_audit_json_names_the_convention_and_matches(run_cli):
    code, out, err = run_cli(["audit", EXAMPLES / "resmlp_dfa.pt", "-f", "json", "-q"])
    assert code in (0, 1), err
    d = json.loads(out)
    assert d["median"] == "lower"
    subject = fadiag.load(str(EXAMPLES / "resmlp_dfa.pt"))
    x0, y0 = subject.batches[0]
    assert d["residual_norms"] == pytest.approx(ref_residual_norms(subject.model, x0), rel=REL)
    assert d["bp_grad_norms"] == pytest.approx(ref_bp_grad_norms(subject.model, x0, y0), rel=REL)


def test_spec_median_midpoint_and_bad_value(tmp_path, tiny_resmlp_ckpt, run_cli):
    f = tiny_resmlp_ckpt(spec_overrides={"audit": {"median": "midpoint"}})
    code, out, err = run_cli(["audit", f.ckpt, "-f", "json", "-q"])
    assert code in (0, 1), err
    d = json.loads(out)
    assert d["median"] == "midpoint"
    import numpy as np

    m = f.build_model()
    x0, _ = f.batches()[0]
    with torch.no_grad():
        _, hs = m(x0, return_hidden=True)
    assert d["residual_norms"] == pytest.approx([float(np.median(h.double().norm(dim=-1).numpy())) for h in hs],
                                                rel=1e-6)
    g = tiny_resmlp_ckpt(spec_overrides={"audit": {"median": "upper"}})
    code, out, err = run_cli(["audit", g.ckpt, "-f", "json", "-q"])
    assert code == 2 and "audit.median" in err and "Traceback" not in err


def test_diagnostic_report_verdict_and_dict():
    th = CP.DiagnosticThresholds()
    assert (th.g_norm_floor, th.h_norm_explosion_ratio, th.stability_drift_ceiling, th.frozen_acc_margin_pp) == (
        1e-7, 50.0, 0.30, 2.0)
    ok = CP.DiagnosticReport("BP", [1.0, 2.0, 3.0], [1e-3, 1e-3, 1e-3], 1, 0.1, 0.6, 0.3)
    assert ok.verdict == "trustworthy"
    d = ok.to_dict()
    assert list(d) == ["method_name", "notes", "residual_norms", "bp_grad_norms", "stability_layer",
                       "cross_batch_stability", "headline_acc", "frozen_baseline_acc", "verdict", "thresholds",
                       "flags"]
    assert d["thresholds"] == {"g_norm_floor": 1e-7, "h_norm_explosion_ratio": 50.0,
                               "stability_drift_ceiling": 0.30, "frozen_acc_margin_pp": 2.0}
    bad = CP.DiagnosticReport("DFA", [1.0, 100.0], [1.0, 1e-9], 1, 0.9, 0.31, 0.35)
    assert bad.verdict == ("needs walk-back: residual stream exploded; BP grad at numerical floor; "
                           "BP grad direction is drift-dominated; deep blocks fail to beat frozen-random baseline")
    # Reference defects fixed: NaN and ||h_0|| = 0 flag instead of passing.
    assert CP.DiagnosticReport("x", [float("nan"), 1.0], [1.0, 1.0], 1, 0.0, 0.5).flagged
    assert CP.DiagnosticReport("x", [0.0, 1.0], [1.0, 1.0], 1, 0.0, 0.5).flagged
    assert CP.DiagnosticReport("x", [1.0, 1.0], [1.0, 1.0], 1, 0.0, 0.5).to_dict()["flags"][3]["flagged"] is None
