"""``fadiag credit`` end to end: the issue's acceptance numbers on the shipped examples, N/A handling,
and the one batched pass per layer, checked against slow references."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import EXAMPLES

import fadiag
from fadiag.credit_api import credit, toy_lq


@pytest.fixture(scope="module")
def bp_subject():
    return fadiag.load(str(EXAMPLES / "resmlp_bp.pt"), batches=1)


@pytest.fixture(scope="module")
def dfa_subject():
    return fadiag.load(str(EXAMPLES / "resmlp_dfa.pt"), batches=1)


def test_bp_signal_on_bp_example_rho_at_every_layer(bp_subject):
    rep = credit(bp_subject, signal="bp")
    rhos = [r["rho"] for r in rep["layers"]]
    assert len(rhos) == 7
    assert min(rhos) >= 0.95, rhos  # published calibration: BP ≈ 0.9965
    assert all(abs(r["gamma"] - 1.0) < 1e-9 for r in rep["layers"])  # a_l is g_l up to the 1/B scale
    assert rep["verdict"] == "ok"


def test_random_signal_rho_near_zero(bp_subject):
    rep = credit(bp_subject, signal="random")
    assert abs(rep["means"]["rho"]["all_layers"]) < 0.1
    assert any(f["id"] == "rho" and f["flagged"] for f in rep["flags"])


def test_dfa_example_every_layer_with_norms_and_both_means(dfa_subject):
    rep = credit(dfa_subject)  # spec: signal dfa, init checkpoint
    assert rep["signal"] == "dfa"
    assert [r["layer"] for r in rep["layers"]] == list(range(7))
    for r in rep["layers"]:
        assert r["a_norm"] is not None and r["g_norm"] is not None and r["gamma"] is not None
        assert r["drift"] is not None
    m = rep["means"]["gamma"]
    assert m["aggregation"] and m["all_layers"] is not None and m["deep_only"] is not None
    # deep-only mean excludes layer 0, recomputed here from the per-layer values
    deep = [r["gamma"] for r in rep["layers"][1:]]
    assert m["deep_only"] == pytest.approx(sum(deep) / len(deep), rel=1e-12)
    # ||g_L|| of the DFA example is below the (b) floor: Γ there is marked uninterpretable
    assert rep["layers"][-1]["g_norm"] < 1e-7 and rep["layers"][-1]["gamma_interpretable"] is False


def test_dfa_gamma_matches_manual_feedback_product(dfa_subject):
    """Γ_l with the stored B_l, recomputed by hand in float64 from a separate forward pass."""
    rep = credit(dfa_subject)
    m = dfa_subject.model
    x, y = dfa_subject.batches[0]
    fb = dfa_subject.extras["feedback"].double()
    with torch.enable_grad():
        logits, hs = m(x, return_hidden=True)
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        gs = torch.autograd.grad(loss, hs)
    e = logits.detach().double().softmax(-1) - torch.nn.functional.one_hot(y, 10).double()
    for l in (0, 3, 6):
        a = e @ fb[l]
        g = gs[l].double()
        cos = [float(a[b] @ g[b]) / (math.sqrt(float(a[b] @ a[b])) * math.sqrt(float(g[b] @ g[b])))
               for b in range(len(y))]
        assert rep["layers"][l]["gamma"] == pytest.approx(sum(cos) / len(cos), rel=1e-5, abs=1e-7)


def test_missing_feedback_is_na_never_a_fallback(bp_subject):
    rep = credit(bp_subject, signal="dfa")
    assert "signal" in rep["not_available"]
    assert all(r["gamma"] is None and r["rho"] is None for r in rep["layers"])
    assert rep["flags"][0]["id"] == "signal" and rep["flags"][0]["flagged"] is True


def test_drift_matches_loop_reference(bp_subject):
    rep = credit(bp_subject, signal="bp", init_path=str(EXAMPLES / "resmlp_bp_init.pt"))
    init = torch.load(EXAMPLES / "resmlp_bp_init.pt", weights_only=True)["model"]
    sd = bp_subject.state_dict
    names = [k for k in sd if k.startswith("blocks.2.")]
    num = sum(float(((sd[k].double() - init[k].double()) ** 2).sum()) for k in names)
    den = sum(float((init[k].double() ** 2).sum()) for k in names)
    assert rep["layers"][3]["drift"] == pytest.approx(math.sqrt(num) / math.sqrt(den), rel=1e-10)


def test_toy_lq_bp_one_dfa_zero():
    rep = toy_lq(d=16, depth=6, batch=64, seed=0)
    assert all(r["costate_cos_bp"] > 0.999 for r in rep["layers"])
    assert abs(rep["means"]["costate_cos_dfa"]["all_layers"]) < 0.2


def test_cli_credit_exit_codes_and_json(run_cli):
    code, out, err = run_cli(["credit", EXAMPLES / "resmlp_dfa.pt", "--format", "json", "-q"])
    assert code == 1
    d = json.loads(out)
    assert d["schema"] == "fadiag.credit/1" and len(d["layers"]) == 7
    code, out, _ = run_cli(["credit", EXAMPLES / "resmlp_bp.pt", "--format", "json", "-q"])
    assert code == 0
    code, out, _ = run_cli(["credit", "--toy-lq", "--format", "json", "-q"])
    assert code == 0 and json.loads(out)["layers"][0]["costate_cos_bp"] > 0.999


@pytest.mark.parametrize("args, needle", [
    (["--signal", "bogus"], "unknown signal"),
    (["--eps", "-1"], "--eps"),
    (["--n-dirs", "0"], "--n-dirs"),
    (["--eta", "nan"], "etas"),
    (["--threshold", "rho_deep_floor=x"], "must be a number"),
])
def test_cli_credit_bad_options_exit_2(run_cli, args, needle):
    code, out, err = run_cli(["credit", EXAMPLES / "resmlp_bp.pt", *args])
    assert code == 2, err
    assert needle in err and "Traceback" not in err and out == ""
    assert len(err.strip().splitlines()) == 1
