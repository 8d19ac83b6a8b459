"""Feature relevance (docs/science.md §4): slow references, degenerate inputs, the learner and its state I/O."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fadiag.diagnostics.relevance import (
    LearnerState,
    adam_effective_step_size,
    learner_state_from_state_dict,
    mean_abs_sensitivity,
    non_finite_fields,
    path_norm_relevance,
    relevance_report,
    sensitivity,
)
from fadiag.errors import CheckpointError, InputError, MissingInputError
from fadiag.models.multihead import MultiHeadLearner, split_state, state_from_arrays

EXAMPLE = Path(__file__).resolve().parents[3] / "checkpoints_example" / "multihead"


def _model(n_features=3, hidden=(4, 3), n_heads=2, seed=0, dtype=torch.float64, stats=True):
    torch.manual_seed(seed)
    m = MultiHeadLearner(n_features=n_features, hidden=hidden, n_heads=n_heads).to(dtype)
    if stats:  # non-trivial normaliser: offsets and scales that differ per feature
        scale = torch.logspace(-1, 1, n_features, dtype=dtype)
        m.update_normalizer(torch.randn(64, n_features, dtype=dtype) * scale + 3.0)
    return m


def _path_loop(ws, wh):
    """Sum over every input -> output path of the product of |w| along it, in float64 loops."""
    ws = [np.asarray(w, dtype=np.float64) for w in ws]
    wh = np.asarray(wh, dtype=np.float64)
    n_f = ws[0].shape[1] if ws else wh.shape[1]
    out = np.zeros((wh.shape[0], n_f))
    widths = [w.shape[0] for w in ws]
    for h in range(wh.shape[0]):
        for f in range(n_f):
            total = 0.0
            for units in itertools.product(*[range(n) for n in widths]):
                prod, prev = 1.0, f
                for w, j in zip(ws, units):
                    prod *= abs(w[j, prev])
                    prev = j
                total += prod * abs(wh[h, prev])
            out[h, f] = total
    return out


# -- path norm ---------------------------------------------------------------------------------------

def test_path_norm_equals_sum_over_paths():
    m = _model()
    ws = [layer.weight for layer in m.trunk]
    got = path_norm_relevance(ws, m.heads.weight)
    want = _path_loop([w.detach() for w in ws], m.heads.weight.detach())
    assert got.shape == (2, 3) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    assert want.min() > 0.05  # a real number, not a trivially zero match


@settings(max_examples=25, deadline=None)
@given(n_f=st.integers(1, 3), hidden=st.lists(st.integers(1, 3), max_size=3), n_heads=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_path_norm_property(n_f, hidden, n_heads, seed):
    rng = np.random.default_rng(seed)
    widths = [n_f] + hidden
    ws = [torch.from_numpy(rng.standard_normal((b, a))) for a, b in zip(widths[:-1], widths[1:])]
    wh = torch.from_numpy(rng.standard_normal((n_heads, widths[-1])))
    np.testing.assert_allclose(path_norm_relevance(ws, wh).numpy(), _path_loop(ws, wh), rtol=1e-10)


def test_no_trunk_relevance_is_abs_head_weight():
    wh = torch.tensor([[1.5, -2.0, 0.0], [-0.25, 0.5, 3.0]])
    np.testing.assert_array_equal(path_norm_relevance([], wh).numpy(), np.abs(wh.numpy()))


# -- sensitivity -------------------------------------------------------------------------------------

def test_sensitivity_equals_autograd_jacobian_through_normaliser():
    m = _model(n_features=5, hidden=(6, 4), n_heads=3)
    x = torch.randn(5, dtype=torch.float64) * 4 + 2
    got = sensitivity(m, x)
    want = torch.autograd.functional.jacobian(lambda v: m(v[None])[0], x)
    assert got.shape == (3, 5)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the normaliser is inside: J_raw = J_z / (sqrt(var) + 1e-8), with J_z from the same net without it
    bare = MultiHeadLearner(n_features=5, hidden=(6, 4), n_heads=3, normalize=False).double()
    bare.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("norm_")})
    z = m.normalized(x[None])[0]
    j_z = torch.autograd.functional.jacobian(lambda v: bare(v[None])[0], z)
    torch.testing.assert_close(got, j_z / (m.norm_var.sqrt() + 1e-8), rtol=1e-10, atol=1e-12)
    assert (m.norm_var.sqrt() > 2).any() and (m.norm_var.sqrt() < 0.5).any()  # the scaling is not ~1


def test_sensitivity_leaves_model_state_alone():
    m = _model()
    m.train()
    sensitivity(m, torch.randn(3, dtype=torch.float64))
    mean_abs_sensitivity(m, torch.randn(4, 3, dtype=torch.float64))
    assert m.training and all(p.grad is None for p in m.parameters())


def test_mean_abs_sensitivity_equals_per_row_loop():
    m = _model(n_features=4, hidden=(5, 5), n_heads=3)
    X = torch.randn(7, 4, dtype=torch.float64) * 3 + 1
    got = mean_abs_sensitivity(m, X)
    want = torch.stack([torch.autograd.functional.jacobian(lambda v: m(v[None])[0], x).abs() for x in X]).mean(0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # abs before the mean matters: the signed mean is a different (smaller) number
    signed = torch.stack([torch.autograd.functional.jacobian(lambda v: m(v[None])[0], x) for x in X]).mean(0)
    assert (signed.abs() < got - 1e-6).any()


def test_per_raw_unit_relevance_is_the_raw_jacobian_of_a_linear_learner():
    """With no trunk the learner is linear: d pred_h / d x_f = w_hf / (sqrt(var_f) + 1e-8) exactly, so
    |Jacobian| == per_raw_unit_relevance, while the reference's normalized field is off by var_f."""
    m = _model(n_features=3, hidden=(), n_heads=2)
    state = learner_state_from_state_dict(m.state_dict())
    report = relevance_report(state)
    jac = sensitivity(m, torch.randn(3, dtype=torch.float64)).abs().numpy()
    for h in range(2):
        ph = report["per_head"][f"head_{h}"]
        np.testing.assert_allclose(list(ph["per_raw_unit_relevance"].values()), jac[h], rtol=1e-9)
        assert not np.allclose(list(ph["normalized_weight_relevance"].values()), jac[h], rtol=1e-2)


# -- normalised vs per raw unit ----------------------------------------------------------------------

def test_normalized_vs_per_raw_unit_relations():
    # no trunk: weight relevance is |w_h| = (1, 2, 3), so the two derived fields are hand-computable
    rel = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    var = torch.tensor([4.0, 0.25, 0.0], dtype=torch.float64)
    state = LearnerState([], rel, norm_mean=torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), norm_var=var)
    report = relevance_report(state)
    head = report["per_head"]["head_0"]
    # the reference's field: rel * sqrt(var + 1e-8); a constant feature is scaled DOWN to ~0
    np.testing.assert_allclose(list(head["normalized_weight_relevance"].values()),
                               [math.sqrt(4 + 1e-8), 2 * math.sqrt(0.25 + 1e-8), 3e-4], rtol=1e-12)
    # per raw unit: rel / (sqrt(var) + 1e-8), the normaliser's own divisor; a constant feature blows UP
    np.testing.assert_allclose(list(head["per_raw_unit_relevance"].values()),
                               [1 / (2 + 1e-8), 2 / (0.5 + 1e-8), 3e8], rtol=1e-12)
    np.testing.assert_allclose(list(report["trunk"]["normalizer_std"].values()),
                               [math.sqrt(4 + 1e-8), math.sqrt(0.25 + 1e-8), 1e-4], rtol=1e-12)
    assert list(report["trunk"]["normalizer_mean"].values()) == [1.0, -2.0, 0.5]


# -- step sizes and traces ---------------------------------------------------------------------------

def test_idbd_log_step_sizes_are_exponentiated():
    m = _model(stats=False)
    sd = dict(m.state_dict())
    alpha = torch.full((4, 3), 0.01, dtype=torch.float64)
    alpha[:, 1] = 0.1
    sd["log_step_sizes.trunk.0.weight"] = alpha.log()
    sd["log_step_sizes.heads.weight"] = torch.log(torch.tensor([[0.02] * 3, [0.04] * 3], dtype=torch.float64))
    state = learner_state_from_state_dict(sd)
    assert state.step_size_kind == "log_step_sizes"
    report = relevance_report(state)
    act = report["trunk"]["step_size_activity"]
    assert act == pytest.approx({"feature_0": 0.01, "feature_1": 0.1, "feature_2": 0.01}, rel=1e-12)
    assert report["per_head"]["head_1"]["mean_step_size"] == pytest.approx(0.04, rel=1e-12)


def test_scalar_step_size_is_repeated():
    sd = dict(_model(stats=False).state_dict())
    sd["step_size"] = torch.tensor(-0.003)  # sign ignored: |step size|
    report = relevance_report(learner_state_from_state_dict(sd))
    assert list(report["trunk"]["step_size_activity"].values()) == pytest.approx([0.003] * 3)
    assert [report["per_head"][h]["mean_step_size"] for h in ("head_0", "head_1")] == pytest.approx([0.003] * 2)


def test_per_weight_step_sizes_and_traces():
    sd = dict(_model(stats=False).state_dict())
    s = torch.arange(12, dtype=torch.float64).reshape(4, 3) / 100
    sd["step_sizes.trunk.0.weight"] = s
    sd["step_sizes.heads.weight"] = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    sd["traces.trunk.0.weight"] = -s * 10
    report = relevance_report(learner_state_from_state_dict(sd))
    assert list(report["trunk"]["step_size_activity"].values()) == pytest.approx([0.045, 0.055, 0.065])
    assert list(report["trunk"]["trace_activity"].values()) == pytest.approx([0.45, 0.55, 0.65])
    assert [report["per_head"][h]["mean_step_size"] for h in ("head_0", "head_1")] == pytest.approx([2.0, 2.0])


def test_adam_effective_step_size_matches_hand_formula():
    m = _model(stats=False)
    opt = torch.optim.Adam(m.parameters(), lr=0.01, betas=(0.8, 0.95), eps=1e-6)
    for _ in range(3):
        opt.zero_grad()
        m(torch.randn(8, 3, dtype=torch.float64)).pow(2).sum().backward()
        opt.step()
    state = learner_state_from_state_dict(m.state_dict(), optimizer_state=opt.state_dict())
    assert state.step_size_kind == "adam"
    for param, got in ((m.trunk[0].weight, state.input_step_sizes), (m.heads.weight, state.head_step_sizes)):
        v = opt.state[param]["exp_avg_sq"].numpy()
        want = 0.01 / (np.sqrt(v / (1 - 0.95 ** 3)) + 1e-6)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
        assert not np.allclose(want, 0.01 / (np.sqrt(v) + 1e-6), rtol=1e-3)
    with pytest.raises(MissingInputError):
        adam_effective_step_size(torch.ones(2), 0, 0.01, 0.9, 1e-8)


def test_step_size_kind_selection():
    sd = dict(_model(stats=False).state_dict())
    sd["step_size"] = torch.tensor(0.5)
    sd["step_sizes.trunk.0.weight"] = torch.full((4, 3), 0.25, dtype=torch.float64)
    auto = learner_state_from_state_dict(sd)
    # auto picks per layer: per-weight step sizes win for trunk 0, the heads (none per weight) take the scalar
    assert auto.step_size_kind == "step_sizes+step_size" and float(auto.head_step_sizes) == 0.5
    assert np.all(np.asarray(auto.input_step_sizes) == 0.25)
    assert learner_state_from_state_dict(sd, step_size_kind="step_size").input_step_sizes.item() == 0.5
    none = learner_state_from_state_dict(sd, step_size_kind="none")
    assert none.input_step_sizes is None and "step_size_activity" not in relevance_report(none)["trunk"]
    with pytest.raises(MissingInputError):
        learner_state_from_state_dict(sd, step_size_kind="log_step_sizes")
    with pytest.raises(InputError):
        learner_state_from_state_dict(sd, step_size_kind="idbd")


# -- report layout -----------------------------------------------------------------------------------

def test_absent_inputs_give_absent_fields():
    m = MultiHeadLearner(n_features=3, hidden=(4,), n_heads=2, normalize=False)
    report = relevance_report(learner_state_from_state_dict(m.state_dict()))
    assert report["trunk"] == {}
    assert set(report["per_head"]["head_0"]) == {"weight_relevance", "head_reliance"}


def test_full_layout_and_default_names():
    sd = dict(_model().state_dict())
    sd["step_size"] = torch.tensor(0.1)
    sd["traces.trunk.0.weight"] = torch.ones(4, 3)
    report = relevance_report(learner_state_from_state_dict(sd))
    assert list(report["trunk"]) == ["step_size_activity", "trace_activity", "normalizer_mean", "normalizer_std"]
    assert list(report["per_head"]) == ["head_0", "head_1"]
    head = report["per_head"]["head_1"]
    assert list(head) == ["weight_relevance", "normalized_weight_relevance", "per_raw_unit_relevance",
                          "head_reliance", "mean_step_size"]
    assert list(head["weight_relevance"]) == ["feature_0", "feature_1", "feature_2"]
    assert list(head["head_reliance"]) == ["neuron_0", "neuron_1", "neuron_2"]
    assert all(type(v) is float for v in head["weight_relevance"].values())


def test_named_report_and_bad_names():
    state = learner_state_from_state_dict(_model().state_dict())
    report = relevance_report(state, feature_names=["a", "b", "c"], head_names=["x", "y"])
    assert list(report["per_head"]) == ["x", "y"] and list(report["trunk"]["normalizer_mean"]) == ["a", "b", "c"]
    with pytest.raises(InputError):
        relevance_report(state, feature_names=["a", "b"])
    with pytest.raises(InputError):
        relevance_report(state, head_names=["x", "x"])


def _column_means(a) -> list:
    """Mean of |a[:, f]| for each column f, by a plain loop in float64."""
    a = np.abs(np.asarray(a, dtype=np.float64))
    return [sum(a[r, f] for r in range(a.shape[0])) / a.shape[0] for f in range(a.shape[1])]


def test_fast_report_equals_float64_reference():
    """Every field of the fast report against an independent float64 reference: the path norm as a sum over
    paths (loops), the normaliser's formulas written out, and |.| means as loops."""
    m = _model(n_features=6, hidden=(8, 5), n_heads=3, dtype=torch.float32)
    sd = dict(m.state_dict())
    sd["step_sizes.trunk.0.weight"] = torch.rand(8, 6)
    sd["step_sizes.heads.weight"] = torch.rand(3, 5)
    sd["traces.trunk.0.weight"] = torch.randn(8, 6)
    report = relevance_report(learner_state_from_state_dict(sd))
    ws = [sd[f"trunk.{i}.weight"].double().numpy() for i in range(2)]
    wh = sd["heads.weight"].double().numpy()
    var = sd["norm_var"].double().numpy()
    rel = _path_loop(ws, wh)
    std = [math.sqrt(v + 1e-8) for v in var]
    for h in range(3):
        head = report["per_head"][f"head_{h}"]
        want = {"weight_relevance": rel[h], "normalized_weight_relevance": [r * s for r, s in zip(rel[h], std)],
                "per_raw_unit_relevance": [r / (math.sqrt(v) + 1e-8) for r, v in zip(rel[h], var)],
                "head_reliance": np.abs(wh[h]),
                "mean_step_size": _column_means(sd["step_sizes.heads.weight"].numpy()[h][:, None])[0]}
        for field, w in want.items():
            got = list(head[field].values()) if isinstance(head[field], dict) else head[field]
            np.testing.assert_allclose(got, w, rtol=1e-12, err_msg=field)
    trunk = report["trunk"]
    np.testing.assert_allclose(list(trunk["step_size_activity"].values()),
                               _column_means(sd["step_sizes.trunk.0.weight"].numpy()), rtol=1e-12)
    np.testing.assert_allclose(list(trunk["trace_activity"].values()),
                               _column_means(sd["traces.trunk.0.weight"].numpy()), rtol=1e-12)
    np.testing.assert_allclose(list(trunk["normalizer_std"].values()), std, rtol=1e-12)
    assert min(rel.min(), *std) > 1e-3  # real numbers, not a trivially zero match


# -- degenerate inputs -------------------------------------------------------------------------------

def test_zero_weights_give_zero_finite_relevance():
    state = LearnerState([torch.zeros(4, 3), torch.zeros(2, 4)], torch.zeros(2, 2))
    report = relevance_report(state)
    assert all(v == 0.0 for v in report["per_head"]["head_0"]["weight_relevance"].values())
    assert non_finite_fields(report) == []


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0 in the matmul
def test_nan_weight_propagates_only_along_its_paths():
    m = _model()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["trunk.0.weight"][2, 1] = float("nan")
    report = relevance_report(learner_state_from_state_dict(sd))
    bad = non_finite_fields(report)
    for h in ("head_0", "head_1"):
        rel = report["per_head"][h]["weight_relevance"]
        assert math.isnan(rel["feature_1"]) and math.isfinite(rel["feature_0"]) and math.isfinite(rel["feature_2"])
        assert f"per_head.{h}.weight_relevance.feature_1" in bad
    assert len(bad) == 2 * 3  # feature_1 in three fields of two heads, nothing else
    sd["heads.weight"][0, 0] = float("inf")
    report = relevance_report(learner_state_from_state_dict(sd))
    assert math.isinf(report["per_head"]["head_0"]["head_reliance"]["neuron_0"])


def test_single_feature_and_no_trunk():
    state = LearnerState([torch.tensor([[2.0], [-3.0]])], torch.tensor([[1.0, 1.0]]),
                         norm_var=torch.tensor([4.0]))
    report = relevance_report(state)
    assert report["per_head"]["head_0"]["weight_relevance"] == {"feature_0": 5.0}
    assert report["per_head"]["head_0"]["per_raw_unit_relevance"]["feature_0"] == pytest.approx(5.0 / (2 + 1e-8))
    flat = relevance_report(LearnerState([], torch.tensor([[-1.0, 2.0]]), input_step_sizes=torch.tensor(0.1)))
    assert flat["per_head"]["head_0"]["weight_relevance"] == {"feature_0": 1.0, "feature_1": 2.0}
    assert flat["per_head"]["head_0"]["head_reliance"] == {"neuron_0": 1.0, "neuron_1": 2.0}
    assert flat["trunk"]["step_size_activity"] == pytest.approx({"feature_0": 0.1, "feature_1": 0.1})


def test_bad_shapes_are_input_errors():
    with pytest.raises(InputError):
        LearnerState([torch.ones(4, 3)], torch.ones(2, 5))
    with pytest.raises(InputError):
        LearnerState([torch.ones(4, 3)], torch.ones(2, 4), norm_var=torch.ones(4))
    with pytest.raises(CheckpointError):
        learner_state_from_state_dict({"trunk.0.weight": torch.ones(2, 2)})


# -- the learner and its state I/O -------------------------------------------------------------------

def test_welford_normaliser_matches_whole_data_statistics():
    m = MultiHeadLearner(n_features=3, hidden=(4,), n_heads=1).double()
    x = torch.randn(100, 3, dtype=torch.float64) * torch.tensor([0.01, 1.0, 1e3], dtype=torch.float64) + 7
    for chunk in (x[:1], x[1:40], x[40:41], x[41:]):
        m.update_normalizer(chunk)
    torch.testing.assert_close(m.norm_mean, x.mean(0), rtol=1e-12, atol=0)
    torch.testing.assert_close(m.norm_var, x.var(0, unbiased=False), rtol=1e-10, atol=0)
    assert int(m.norm_count) == 100
    z = m.normalized(x)
    # unit variance up to the divisor's +1e-8 (relative 1e-6 on the 0.01-scale feature)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), rtol=2e-6, atol=0)


def test_npz_round_trip_equals_torch_state_dict():
    m = _model(dtype=torch.float32)
    sd = dict(m.state_dict())
    extras = {"step_sizes.trunk.0.weight": torch.rand(4, 3), "traces.trunk.0.weight": torch.randn(4, 3),
              "log_step_sizes.heads.weight": torch.randn(2, 3), "step_size": torch.tensor(0.1)}
    buf = io.BytesIO()
    np.savez(buf, **{k: v.numpy() for k, v in {**sd, **extras}.items()})
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        back = state_from_arrays(z)
    module, got_extras = split_state(back)
    assert set(module) == set(sd) and set(got_extras) == set(extras)
    for k in sd:
        assert module[k].dtype == sd[k].dtype and torch.equal(module[k], sd[k]), k
    m2 = MultiHeadLearner(n_features=3, hidden=(4, 3), n_heads=2)
    m2.load_state_dict(module, strict=True)
    x = torch.randn(5, 3)
    torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)


def test_state_from_arrays_jax_layout_and_unknown_keys():
    w = np.arange(6, dtype=np.float32).reshape(3, 2)  # JAX kernel (in=3, out=2)
    got = state_from_arrays({"heads.weight": w, "heads.bias": np.zeros(2, np.float32),
                             "step_sizes.heads.weight": w}, weights_in_out=True)
    assert got["heads.weight"].shape == (2, 3) and got["step_sizes.heads.weight"].shape == (2, 3)
    with pytest.raises(CheckpointError, match="trunk.0.wieght"):
        state_from_arrays({"trunk.0.wieght": w})


def test_multihead_forward_shapes():
    for hidden in ((), (5,), (6, 4)):
        m = MultiHeadLearner(n_features=3, hidden=hidden, n_heads=4, normalize=False)
        assert m(torch.randn(2, 3)).shape == (2, 4)
        assert not any(k.startswith("norm_") for k in m.state_dict())


def test_shipped_example_truth_ranks_first():
    """The claim in checkpoints_example/multihead/PROVENANCE.md, re-checked on the shipped files."""
    import yaml

    spec = yaml.safe_load((EXAMPLE / "multihead.yaml").read_text())
    saved = torch.load(EXAMPLE / "multihead.pt", weights_only=True)
    m = MultiHeadLearner(**spec["model"]["args"])
    m.load_state_dict(saved["model"], strict=True)
    sd = {**saved["model"], **saved["learner"]}
    names, heads = spec["relevance"]["feature_names"], spec["relevance"]["head_names"]
    report = relevance_report(learner_state_from_state_dict(sd), names, heads)
    assert "step_size_activity" in report["trunk"] and "trace_activity" in report["trunk"]
    with np.load(EXAMPLE / spec["data"]["path"], allow_pickle=False) as z:
        X = torch.from_numpy(z["x"])
    sens = mean_abs_sensitivity(m, X).numpy() * np.sqrt(m.norm_var.double().numpy() + 1e-8)
    for h, head in enumerate(heads):
        used = spec["relevance"]["truth"][head]
        rel = report["per_head"][head]["weight_relevance"]
        assert min(rel[f] for f in used) > max(v for f, v in rel.items() if f not in used), head
        s = dict(zip(names, sens[h]))
        assert min(s[f] for f in used) > max(v for f, v in s.items() if f not in used), head
