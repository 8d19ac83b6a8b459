"""``fadiag relevance`` end to end on the shipped multi-head learner, plus the npz (no-pickle) export path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from conftest import EXAMPLES


@pytest.fixture(scope="module")
def example_report():
    from typer.testing import CliRunner

    from fadiag.cli import app

    res = CliRunner().invoke(app, ["relevance", str(EXAMPLES / "multihead" / "multihead.pt"), "--sensitivity", "--observation", "3",
                                   "--format", "json", "-q"])
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def test_layout_names_and_schema(example_report):
    r = example_report
    spec = yaml.safe_load((EXAMPLES / "multihead" / "multihead.yaml").read_text())
    assert r["schema"] == "fadiag.relevance/2"
    assert r["feature_names"] == spec["relevance"]["feature_names"]
    assert list(r["per_head"]) == spec["relevance"]["head_names"]
    for head in r["per_head"].values():
        assert set(head["weight_relevance"]) == set(r["feature_names"])
        assert {"normalized_weight_relevance", "per_raw_unit_relevance", "head_reliance"} <= set(head)
        assert len(head["head_reliance"]) == 64 and "neuron_0" in head["head_reliance"]
    assert {"step_size_activity", "trace_activity", "normalizer_mean", "normalizer_std"} <= set(r["trunk"])


def test_truth_features_rank_first_by_relevance_and_sensitivity(example_report):
    checks = example_report["truth_checks"]
    for kind in ("weight_relevance", "mean_abs_sensitivity_x_std"):
        assert all(v["ranked_first"] and v["ratio"] > 1 for v in checks[kind].values()), checks[kind]


def test_report_is_typed_and_round_trips(example_report):
    from fadiag.reports import from_dict
    from fadiag.families.relevance.report import RelevanceReport

    d = example_report
    assert d["verdict"] == "trustworthy" and [f["id"] for f in d["flags"]][:2] == ["nonfinite", "nonfinite_state"]
    rep = from_dict(d)
    assert isinstance(rep, RelevanceReport) and rep.to_dict() == d and rep.verdict == "trustworthy"
    assert from_dict({**d, "schema": "fadiag.relevance/1", "verdict": "ok"}).to_dict() == d


def test_observation_jacobian_matches_autograd(example_report):
    import fadiag
    from fadiag.families.relevance.api import relevance

    subj = fadiag.load(str(EXAMPLES / "multihead" / "multihead.pt"), labels="regression")
    x = subj.batches[0][0][3].clone().requires_grad_(True)
    J = torch.autograd.functional.jacobian(lambda v: subj.model(v.unsqueeze(0)).squeeze(0), x)
    got = example_report["sensitivity"]["observation"]["jacobian"]
    for h, name in enumerate(example_report["head_names"]):
        row = [got[name][f] for f in example_report["feature_names"]]
        # both are float32 computations in different op orders; noise_a (scale 1e-3) amplifies roundoff
        np.testing.assert_allclose(row, J[h].double().numpy(), rtol=1e-3, atol=1e-9)


def test_npz_export_gives_the_same_state_only_report(tmp_path, run_cli):
    """A learner written in JAX/numpy exports plain arrays; the state-only report must be identical."""
    ck = torch.load(EXAMPLES / "multihead" / "multihead.pt", weights_only=True)
    flat = {**ck["model"], **ck["learner"]}
    assert flat["norm_count"].shape == ()  # kept: a 0-d array must stay 0-d through the .npz reader
    np.savez(tmp_path / "learner.npz", **{k: v.numpy() for k, v in flat.items()})
    spec = yaml.safe_load((EXAMPLES / "multihead" / "multihead.yaml").read_text())
    spec["data"]["path"] = str(EXAMPLES / "multihead" / "multihead_data.npz")
    (tmp_path / "learner.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = run_cli(["relevance", tmp_path / "learner.npz", "-f", "json", "-q"])
    assert code == 0, err
    a = json.loads(out)
    code, out2, _ = run_cli(["relevance", EXAMPLES / "multihead" / "multihead.pt", "-f", "json", "-q"])
    b = json.loads(out2)
    assert a["per_head"] == b["per_head"] and a["trunk"] == b["trunk"]


@pytest.mark.parametrize("args, needle", [
    (["--observation", "999999"], "out of range"),
    (["--observation", "1,2,3"], "expected 12 values"),
    (["--observation", "nan,1,2,3,4,5,6,7,8,9,10,11"], "must be finite"),
    (["--head-names", "a,b"], "head names"),
    (["--step-sizes", "adam"], "no such step sizes"),
])
def test_bad_relevance_options_exit_2(run_cli, args, needle):
    code, out, err = run_cli(["relevance", EXAMPLES / "multihead" / "multihead.pt", *args])
    assert code == 2, (code, err)
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_relevance_on_a_non_multihead_checkpoint_is_bad_input(run_cli):
    code, out, err = run_cli(["relevance", EXAMPLES / "resmlp_bp.pt"])
    assert code == 2 and "multihead" in err


def test_relevance_plot(run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    code, out, err = run_cli(["relevance", EXAMPLES / "multihead" / "multihead.pt", "--plot", tmp_path / "r.png", "-q", "-f", "json"])
    assert code == 0 and (tmp_path / "r.png").stat().st_size > 1000


def test_adam_state_in_the_checkpoint_gives_effective_step_sizes(tmp_path, run_cli):
    """docs/science.md §4: per-weight step sizes from Adam state, lr / (sqrt(v_hat) + eps), v_hat = v / (1 - b2^t)."""
    from fadiag.models.multihead import MultiHeadLearner

    torch.manual_seed(0)
    m = MultiHeadLearner(n_features=3, hidden=[4], n_heads=2, normalize=False)
    opt = torch.optim.Adam(m.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-6)
    x, y = torch.randn(32, 3), torch.randn(32, 2)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()
    torch.save({"model": m.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "l.pt")
    (tmp_path / "l.yaml").write_text(yaml.safe_dump(
        {"model": {"arch": "multihead", "args": {"n_features": 3, "hidden": [4], "n_heads": 2, "normalize": False}}}))
    code, out, err = run_cli(["relevance", tmp_path / "l.pt", "--step-sizes", "adam", "-f", "json", "-q"])
    assert code == 0, err
    rep = json.loads(out)
    st = opt.state_dict()["state"][0]  # trunk.0.weight is the first parameter
    v_hat = st["exp_avg_sq"].double() / (1 - 0.99 ** float(st["step"]))
    want = (0.01 / (v_hat.sqrt() + 1e-6)).mean(0)  # mean over output units, per input feature
    got = [rep["trunk"]["step_size_activity"][f"feature_{i}"] for i in range(3)]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-10)
    assert rep["step_size_kind"] == "adam"
