"""``fadiag credit`` end to end: the issue's acceptance numbers on the shipped examples, N/A handling,
and the one batched pass per layer, checked against slow references."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from _tol import close
from conftest import EXAMPLES

import fadiag
from fadiag.families.credit.api import credit, toy_lq


@pytest.fixture(scope="module")
def bp_subject():
    return fadiag.load(str(EXAMPLES / "resmlp_bp.pt"), batches=1)


@pytest.fixture(scope="module")
def dfa_subject():
    return fadiag.load(str(EXAMPLES / "resmlp_dfa.pt"), batches=1)


def test_bp_signal_on_bp_example_rho_at_every_layer(bp_subject):
    rep = credit(bp_subject, signal="bp").to_dict()
    rhos = [r["rho"] for r in rep["layers"]]
    assert len(rhos) == 7
    assert min(rhos) >= 0.95, rhos  # published calibration: BP ≈ 0.9965
    assert all(abs(r["gamma"] - 1.0) < 1e-9 for r in rep["layers"])  # a_l is g_l up to the 1/B scale
    assert rep["verdict"] == "trustworthy"


def test_random_signal_rho_near_zero(bp_subject):
    rep = credit(bp_subject, signal="random").to_dict()
    assert abs(rep["means"]["rho"]["all_layers"]) < 0.1
    assert any(f["id"] == "rho" and f["flagged"] for f in rep["flags"])


def test_dfa_example_every_layer_with_norms_and_both_means(dfa_subject):
    rep = credit(dfa_subject).to_dict()  # spec: signal dfa, init checkpoint
    assert rep["signal"] == "dfa"
    assert [r["layer"] for r in rep["layers"]] == list(range(7))
    for r in rep["layers"]:
        assert r["a_norm"] is not None and r["g_norm_mean_ce"] is not None and r["g_norm_per_sample"] is not None and r["gamma"] is not None
        assert r["drift"] is not None
    m = rep["means"]["gamma"]
    assert m["aggregation"] and m["all_layers"] is not None and m["deep_only"] is not None
    # deep-only mean excludes layer 0, recomputed here from the per-layer values
    deep = [r["gamma"] for r in rep["layers"][1:]]
    assert m["deep_only"] == pytest.approx(sum(deep) / len(deep), rel=1e-12)
    # ||g_L|| of the DFA example is below the (b) floor: Γ there is marked uninterpretable
    assert rep["layers"][-1]["g_norm_mean_ce"] < 1e-7 and rep["layers"][-1]["gamma_interpretable"] is False


def test_dfa_gamma_matches_manual_feedback_product(dfa_subject):
    """Γ_l with the stored B_l, recomputed by hand in float64 from a separate forward pass."""
    rep = credit(dfa_subject).to_dict()
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


def test_missing_feedback_is_bad_input_never_a_fallback(bp_subject):
    from fadiag.errors import MissingInputError

    with pytest.raises(MissingInputError, match="never redraws"):  # exit 2 on the CLI, no report of N/As
        credit(bp_subject, signal="dfa")


def test_drift_matches_loop_reference(bp_subject):
    rep = credit(bp_subject, signal="bp", init_path=str(EXAMPLES / "resmlp_bp_init.pt")).to_dict()
    init = torch.load(EXAMPLES / "resmlp_bp_init.pt", weights_only=True)["model"]
    sd = bp_subject.state_dict
    names = [k for k in sd if k.startswith("blocks.2.")]
    num = sum(float(((sd[k].double() - init[k].double()) ** 2).sum()) for k in names)
    den = sum(float((init[k].double() ** 2).sum()) for k in names)
    assert rep["layers"][3]["drift"] == pytest.approx(math.sqrt(num) / math.sqrt(den), rel=1e-10)


def test_credit_returns_a_typed_report_that_round_trips(bp_subject):
    """credit() -> CreditReport: verdict from the flags (one rule), the non-finite flag is audit's "e", and
    to_dict/from_dict round-trip; a saved /1 report is read with its "nonfinite" flag renamed to "e"."""
    from fadiag.reports import from_dict
    from fadiag.families.credit.report import CreditReport

    rep = credit(bp_subject, signal="bp", n_dirs=4)
    assert isinstance(rep, CreditReport) and rep.schema == "fadiag.credit/2"
    assert [f.id for f in rep.flags] == ["rho", "gamma", "dead_blocks", "e"]
    assert rep.flag("e").name == "non-finite values in the forward/backward pass" and rep.flag("e").flagged is False
    assert rep.verdict == "trustworthy" and not rep.flagged
    d = rep.to_dict()
    assert from_dict(d).to_dict() == d
    old = {**d, "schema": "fadiag.credit/1", "verdict": "ok",
           "flags": [{**f, "id": "nonfinite"} if f["id"] == "e" else f for f in d["flags"]]}
    assert from_dict(old).to_dict() == d
    toy = toy_lq(d=4, depth=2, batch=8).to_dict()
    assert "stream" not in toy and from_dict(toy).to_dict() == toy


def test_thresholds_are_declared_and_checked(bp_subject):
    from fadiag.families.credit.api import DEFAULT_CREDIT_THRESHOLDS
    from fadiag.errors import ThresholdError

    assert DEFAULT_CREDIT_THRESHOLDS == {"rho_deep_floor": 0.5, "g_norm_floor": 1e-7}
    for bad, needle in (({"rho_deep_floor": 1.5}, "in [-1, 1]"), ({"g_norm_floor": 0}, "must be positive"),
                        ({"g_norm_flor": 1e-6}, "did you mean 'g_norm_floor'"),
                        ({"rho_deep_floor": float("nan")}, "finite")):
        with pytest.raises(ThresholdError, match=re.escape(needle)):
            credit(bp_subject, thresholds=bad)
    rep = credit(bp_subject, signal="bp", n_dirs=4, thresholds={"rho_deep_floor": 1.0})
    assert rep.thresholds["rho_deep_floor"] == 1.0 and rep.flag("rho").flagged is True


def test_toy_lq_bp_one_dfa_zero():
    rep = toy_lq(d=16, depth=6, batch=64, seed=0).to_dict()
    assert all(r["costate_cos_bp"] > 0.999 for r in rep["layers"])
    assert abs(rep["means"]["costate_cos_dfa"]["all_layers"]) < 0.2


def test_cli_credit_exit_codes_and_json(run_cli):
    code, out, err = run_cli(["credit", EXAMPLES / "resmlp_dfa.pt", "--format", "json", "-q"])
    assert code == 1
    d = json.loads(out)
    assert d["schema"] == "fadiag.credit/2" and len(d["layers"]) == 7
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


def _value_checkpoint(tmp_path, tiny_resmlp_ckpt, with_target=True):
    from fadiag.models.value import ValueMLP

    torch.manual_seed(5)
    v = ValueMLP(8, hidden=6, depth=1, n_layers=3)
    vt = ValueMLP(8, hidden=6, depth=1, n_layers=3)
    extra = {"value": v.state_dict()}
    if with_target:
        extra["value_target"] = vt.state_dict()
    f = tiny_resmlp_ckpt(extra=extra, spec_overrides={"credit": {
        "signal": "value", "value": "value", "value_target": "value_target",
        "value_args": {"width": 8, "hidden": 6, "depth": 1, "n_layers": 3}, "bridge_k": 4}})
    return f, v, vt


def test_value_signal_is_dV_dh(tmp_path, tiny_resmlp_ckpt):
    f, v, _ = _value_checkpoint(tmp_path, tiny_resmlp_ckpt)
    subj = fadiag.load(str(f.ckpt), batches=1)
    rep = credit(subj).to_dict()
    x, y = subj.batches[0]
    with torch.no_grad():
        _, hs = subj.model(x, return_hidden=True)
    for l in (0, 2):
        h = hs[l].clone().requires_grad_(True)
        (a,) = torch.autograd.grad(v(h, l).sum(), h)
        hh = hs[l].clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(subj.model.forward_from(hh, l), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, hh)
        cos = torch.nn.functional.cosine_similarity(a.double(), g.double(), dim=1, eps=0).mean()
        assert close(rep["layers"][l]["gamma"], float(cos), "float32")  # float32 reference, float64 fadiag


def test_bridge_residual_against_a_loop(tmp_path, tiny_resmlp_ckpt):
    """R_l from the report equals a float64 loop over samples and K noisy states drawn the same way."""
    f, v, vt = _value_checkpoint(tmp_path, tiny_resmlp_ckpt)
    subj = fadiag.load(str(f.ckpt), batches=1)
    rep = credit(subj, seed=0).to_dict()
    x, _ = subj.batches[0]
    with torch.no_grad():
        _, hs = subj.model(x, return_hidden=True)
    gen = torch.Generator().manual_seed(0 + 104729)
    K, lam, sigma = 4, 0.1, 0.1
    for l in range(len(hs) - 1):
        B, d = hs[l + 1].shape
        xi = torch.randn((K, B, d), generator=gen, dtype=torch.float64)
        total = 0.0
        with torch.no_grad():
            vl = v(hs[l], l).double()
            for b in range(B):
                vb = [float(vt((hs[l + 1][b].double() + sigma * xi[k, b]).float().unsqueeze(0), l + 1)) for k in range(K)]
                mx = max(-x_ / lam for x_ in vb)
                lse = mx + math.log(sum(math.exp(-x_ / lam - mx) for x_ in vb))
                target = -lam * lse + lam * math.log(K)
                total += abs(float(vl[b]) - target)
        assert rep["layers"][l]["bridge_residual"] == pytest.approx(total / B, rel=1e-5)
    assert rep["layers"][-1]["bridge_residual"] is None  # no next state after h_L
    assert "bridge_residual" in rep["means"]


def test_bridge_residual_without_target_is_na(tmp_path, tiny_resmlp_ckpt):
    f, _, _ = _value_checkpoint(tmp_path, tiny_resmlp_ckpt, with_target=False)
    rep = credit(fadiag.load(str(f.ckpt), batches=1)).to_dict()
    assert "bridge_residual" in rep["not_available"]
    assert all(r["bridge_residual"] is None for r in rep["layers"])


def test_tensors_signal_reads_precomputed_bp_gradients(tmp_path, tiny_resmlp_ckpt):
    f = tiny_resmlp_ckpt()
    subj = fadiag.load(str(f.ckpt), batches=1)
    x, y = subj.batches[0]
    with torch.enable_grad():
        logits, hs = subj.model(x, return_hidden=True)
        gs = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y, reduction="sum"), hs)
    torch.save({"a": torch.stack([g.detach() for g in gs])}, tmp_path / "a.pt")
    rep = credit(subj, signal="tensors", tensors_path=str(tmp_path / "a.pt")).to_dict()
    assert all(abs(r["gamma"] - 1) < 1e-6 for r in rep["layers"])
    torch.save({"a": torch.zeros(2, 3)}, tmp_path / "bad.pt")
    from fadiag.errors import InputError

    with pytest.raises(InputError):
        credit(subj, signal="tensors", tensors_path=str(tmp_path / "bad.pt"))


def test_fa_signal_chains_stored_matrices(tiny_resmlp_ckpt):
    from fadiag.diagnostics.credit import fa_signals, output_error, per_sample_cosine

    g = torch.Generator().manual_seed(3)
    fb = {"top": torch.randn(3, 8, generator=g), "layers": [torch.randn(8, 8, generator=g) for _ in range(3)]}
    f = tiny_resmlp_ckpt(extra={"fb": fb}, spec_overrides={"credit": {"signal": "fa", "feedback": "fb"}})
    subj = fadiag.load(str(f.ckpt), batches=1)
    rep = credit(subj).to_dict()
    x, y = subj.batches[0]
    with torch.enable_grad():
        logits, hs = subj.model(x, return_hidden=True)
        gs = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y, reduction="sum"), hs)
    a = fa_signals(output_error(logits.detach(), y) @ fb["top"].double(), fb["layers"])
    for l in range(4):
        assert close(rep["layers"][l]["gamma"], float(per_sample_cosine(a[l], gs[l]).mean()), "float32")


def test_token_model_credit_uses_the_class_token(write_checkpoint):
    """ViT: per-sample quantities are the class token's; ‖g_l‖ of the mean CE equals the audit's (b) norms,
    and a DFA signal with (C, d) feedback works (it is about the class token)."""
    from fadiag.families.audit.api import audit
    from fadiag.models.vit_mini import ViTMini

    args = {"image_size": 4, "patch_size": 2, "in_chans": 1, "dim": 8, "depth": 2, "heads": 2, "n_classes": 3}
    torch.manual_seed(0)
    m = ViTMini(**args)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 1, 4, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    fb = torch.randn(3, 3, 8, generator=g)
    f = write_checkpoint(m, "vit_mini", args, x, y, batch_size=16, batches=2, extra={"feedback": fb},
                         spec_overrides={"credit": {"signal": "dfa"}})
    subj = fadiag.load(str(f.ckpt))
    rep_a = audit(subj).to_dict()
    rep_c = credit(subj).to_dict()
    for r, gn in zip(rep_c["layers"], rep_a["bp_grad_norms"]):
        assert r["g_norm_mean_ce"] == pytest.approx(gn, rel=1e-5)
    assert all(r["gamma"] is not None and r["rho"] is not None for r in rep_c["layers"])
    bp = credit(subj, signal="bp").to_dict()
    assert min(r["rho"] for r in bp["layers"]) > 0.95


def test_fa_with_the_wrong_number_of_matrices_is_bad_input(tiny_resmlp_ckpt, run_cli):
    fb = {"top": torch.randn(3, 8), "layers": [torch.randn(8, 8)]}
    f = tiny_resmlp_ckpt(extra={"fb": fb}, spec_overrides={"credit": {"signal": "fa", "feedback": "fb"}})
    code, out, err = run_cli(["credit", f.ckpt])
    assert code == 2 and "FA needs 3 layer matrices" in err


def test_dfa_without_feedback_is_exit_2(run_cli, tiny_resmlp_ckpt):
    f = tiny_resmlp_ckpt()
    code, out, err = run_cli(["credit", f.ckpt, "--signal", "dfa", "-f", "json"])
    assert code == 2 and out == "", (code, err)
    assert err.count("\n") == 1 and "feedback" in err and "never redraws" in err


def test_init_checkpoint_is_found_by_its_own_layout(run_cli, tiny_resmlp_ckpt, tmp_path):
    """The main checkpoint nests its weights under "model" (checkpoint.state_dict: model); the init file
    is a plain flat dict of tensors: M_l is still computed, and equals the float64 reference."""
    import json

    f = tiny_resmlp_ckpt(spec_overrides={"checkpoint": {"state_dict": "model"}})
    torch.manual_seed(123)
    init = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in f.state_dict.items()}
    torch.save(init, tmp_path / "init_flat.pt")
    code, out, err = run_cli(["credit", f.ckpt, "--signal", "bp", "--init", tmp_path / "init_flat.pt", "-f", "json",
                              "-q"])
    assert code in (0, 1), err
    rep = json.loads(out)
    names = [k for k in f.state_dict if k.startswith("blocks.1.")]
    num = sum(float(((f.state_dict[k].double() - init[k].double()) ** 2).sum()) for k in names)
    den = sum(float((init[k].double() ** 2).sum()) for k in names)
    assert rep["layers"][2]["drift"] == pytest.approx(math.sqrt(num / den), rel=1e-10)
