"""alberta-framework users: plain-array exports with a normaliser, learners without LayerNorm or with
other slopes / epsilons, and the Jacobian at a point without eval data.

The Jacobian reference is autograd on a slow float64 forward written here from the learner's definition
(normaliser, optional parameterless LayerNorm, LeakyReLU, heads), independently of fadiag's model code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fadiag.models.multihead import MultiHeadLearner

from conftest import EXAMPLES

F64 = torch.float64


def ref_forward(sd: dict, x, *, use_layer_norm=True, slope=0.01, norm_eps=1e-8, ln_eps=1e-5):
    z = (x - sd["norm_mean"].to(F64)) / (sd["norm_var"].to(F64).sqrt() + norm_eps)
    i = 0
    while f"trunk.{i}.weight" in sd:
        z = z @ sd[f"trunk.{i}.weight"].to(F64).T + sd[f"trunk.{i}.bias"].to(F64)
        if use_layer_norm:
            mu = z.mean(-1, keepdim=True)
            var = ((z - mu) ** 2).mean(-1, keepdim=True)
            z = (z - mu) / torch.sqrt(var + ln_eps)
        z = torch.where(z >= 0, z, slope * z)
        i += 1
    return z @ sd["heads.weight"].to(F64).T + sd["heads.bias"].to(F64)


def ref_jacobian(sd, x, **kw):
    return torch.autograd.functional.jacobian(lambda v: ref_forward(sd, v.unsqueeze(0), **kw).squeeze(0),
                                              x.to(F64))


ARGS = {"n_features": 5, "hidden": [6, 4], "n_heads": 3, "normalize": True}
VARIANTS = [
    {"use_layer_norm": False, "leaky_relu_slope": 0.2, "norm_eps": 1e-3},
    {"use_layer_norm": True, "leaky_relu_slope": 0.05, "norm_eps": 1e-8, "layer_norm_eps": 1e-6},
]


def _learner(tmp_path, extra: dict):
    torch.manual_seed(0)
    m = MultiHeadLearner(**ARGS, **extra)
    m.update_normalizer(torch.randn(40, 5) * torch.tensor([1.0, 3.0, 0.1, 2.0, 0.5]))
    (tmp_path / "l.yaml").write_text(yaml.safe_dump({"model": {"arch": "multihead", "args": {**ARGS, **extra}}}))
    torch.save({"model": m.state_dict()}, tmp_path / "l.pt")
    return m


@pytest.mark.parametrize("extra", VARIANTS)
def test_observation_jacobian_honours_layer_norm_slope_and_eps(tmp_path, run_cli, extra):
    m = _learner(tmp_path, extra)
    x = torch.tensor([0.3, -2.0, 0.05, 1.5, -0.4])
    code, out, err = run_cli(["relevance", tmp_path / "l.pt", "-f", "json", "-q",
                              "--observation", ",".join(map(str, x.tolist()))])
    assert code == 0, err
    rep = json.loads(out)
    sens = rep["sensitivity"]
    assert sens["mean_abs"] is None and "point" in sens["over"]  # no eval data needed, no mean computed
    got = np.array([[sens["observation"]["jacobian"][h][f] for f in rep["feature_names"]] for h in rep["head_names"]])
    kw = {"use_layer_norm": extra["use_layer_norm"], "slope": extra["leaky_relu_slope"],
          "norm_eps": extra["norm_eps"], "ln_eps": extra.get("layer_norm_eps", 1e-5)}
    ref = ref_jacobian(m.state_dict(), x, **kw).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    # the hard-coded architecture (LayerNorm on, slope 0.01, eps 1e-8) is far off: the test can fail
    wrong = ref_jacobian(m.state_dict(), x).numpy()
    assert np.abs(wrong - ref).max() > 1e-2 * np.abs(ref).max()


def test_bad_multihead_args_are_exit_2(tmp_path, run_cli):
    _learner(tmp_path, {})
    (tmp_path / "l.yaml").write_text(yaml.safe_dump({"model": {"arch": "multihead",
                                                               "args": {**ARGS, "leaky_relu_slope": -1}}}))
    code, out, err = run_cli(["relevance", tmp_path / "l.pt"])
    assert code == 2 and "leaky_relu_slope" in err and "Traceback" not in err


def test_inspect_shows_a_0d_normaliser_count(tmp_path, run_cli):
    """norm_count is a 0-d array and stays 0-d (the .npz reader used to make it (1,), failing the spec check;
    tests/families/relevance/test_cli_relevance.py::test_npz_export_gives_the_same_state_only_report runs the export)."""
    ck = torch.load(EXAMPLES / "multihead" / "multihead.pt", weights_only=True)
    np.savez(tmp_path / "learner.npz", **{k: v.numpy() for k, v in {**ck["model"], **ck["learner"]}.items()})
    code, out, err = run_cli(["inspect", tmp_path / "learner.npz", "-f", "json"])
    assert code == 0, err
    (nc,) = [t for t in json.loads(out)["tensors"] if t["key"] == "norm_count"]
    assert nc["shape"] == []


def test_npz_reader_keeps_every_rank(tmp_path):
    from fadiag.checkpoint import read_checkpoint

    arrs = {"s": np.array(3, dtype=np.int64), "f": np.array(2.5, dtype=np.float32), "v": np.arange(3.0),
            "m": np.asfortranarray(np.arange(6.0).reshape(2, 3))}
    np.savez(tmp_path / "a.npz", **arrs)
    got = read_checkpoint(str(tmp_path / "a.npz")).content
    for k, a in arrs.items():
        assert tuple(got[k].shape) == a.shape and np.array_equal(got[k].numpy(), a), k


def _flat_learner(seed=0):
    rng = np.random.default_rng(seed)
    return {"trunk.0.weight": rng.normal(size=(6, 5)), "trunk.0.bias": np.zeros(6),
            "trunk.1.weight": rng.normal(size=(4, 6)), "trunk.1.bias": np.zeros(4),
            "heads.weight": rng.normal(size=(3, 4)), "heads.bias": np.zeros(3),
            "norm_mean": rng.normal(size=5), "norm_var": rng.uniform(0.1, 3, size=5),
            "norm_count": np.array(40)}


def test_hybrid_optimiser_keeps_both_step_size_sources():
    """alberta-framework's hybrid: LMS trunk (one scalar step size), Autostep heads (per weight)."""
    from fadiag.diagnostics.relevance import learner_state_from_state_dict, relevance_report

    flat = _flat_learner()
    heads_alpha = np.random.default_rng(1).uniform(0.0080, 0.0095, size=(3, 4))
    flat["step_size"] = np.array(0.01)
    flat["step_sizes.heads.weight"] = heads_alpha
    state = learner_state_from_state_dict(flat)
    assert state.step_size_kind == "step_size+step_sizes"
    rep = relevance_report(state)
    assert list(rep["trunk"]["step_size_activity"].values()) == pytest.approx([0.01] * 5, rel=1e-12)
    got = [rep["per_head"][f"head_{h}"]["mean_step_size"] for h in range(3)]
    assert got == pytest.approx([sum(r) / 4 for r in heads_alpha.tolist()], rel=1e-12)
    assert all(abs(g - 0.01) > 1e-4 for g in got)  # not the trunk's scalar


def test_state_tier_imports_and_runs_without_torch(tmp_path):
    """A JAX user's process: torch cannot be imported; the state-only report must still come out, equal
    to the report computed from the same arrays as torch tensors."""
    import subprocess
    import sys

    from fadiag.diagnostics.relevance import learner_state_from_state_dict, relevance_report

    flat = _flat_learner(2)
    flat["log_step_sizes.trunk.0.weight"] = np.log(np.random.default_rng(3).uniform(0.001, 0.1, size=(6, 5)))
    flat["traces.trunk.0.weight"] = np.random.default_rng(4).normal(size=(6, 5))
    np.savez(tmp_path / "s.npz", **flat)
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from fadiag.diagnostics.relevance import learner_state_from_state_dict, relevance_report\n"
        f"z = dict(np.load({str(tmp_path / 's.npz')!r}, allow_pickle=False))\n"
        "s = learner_state_from_state_dict(z)\n"
        "print(json.dumps({'kind': s.step_size_kind, 'report': relevance_report(s)}))\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    ref = relevance_report(learner_state_from_state_dict({k: torch.from_numpy(v) for k, v in flat.items()}))
    assert out["kind"] == "log_step_sizes"
    assert _close(out["report"], ref)


def _close(a, b) -> bool:
    if isinstance(a, dict):
        assert set(a) == set(b)
        return all(_close(a[k], b[k]) for k in a)
    assert a == pytest.approx(b, rel=1e-12)
    return True


# ------------------------------------------------------------------- alberta-framework checkpoint folders

ALB = Path(__file__).resolve().parents[2] / "fixtures" / "alberta"
VARIANT_NAMES = ["autostep_ln", "autostep_noln", "idbd", "lms", "hybrid"]
OBS = "0.3,-2.0,0.05,1.5,-0.4"


def _walk(ref, got, path=""):
    """(path, fadiag value, upstream value) for every number upstream reports."""
    if isinstance(ref, dict):
        for k, v in ref.items():
            yield from _walk(v, got[k], f"{path}.{k}" if path else k)
    else:
        yield path, got, ref


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_folder_gives_upstream_numbers(name, run_cli):
    pytest.importorskip("tensorstore", reason="the alberta extra (tensorstore) reads orbax folders")
    ref = json.loads((ALB / "upstream_reference.json").read_text())[name]
    code, out, err = run_cli(["relevance", ALB / name, "-f", "json", "-q", "--observation", OBS])
    assert code == 0, err
    got = json.loads(out)
    assert got["checkpoint"]["format"] == "alberta-orbax" and len(got["checkpoint"]["sha256"]) == 64
    n = 0
    for path, g, r in _walk(ref["relevance"], got):
        if name == "idbd" and path.startswith("trunk.step_size_activity"):
            assert r == 0.0 and g > 0  # upstream reads IDBD's log step sizes as absent: zeros
            continue
        assert g == pytest.approx(r, rel=1e-6, abs=1e-12), path
        n += 1
    assert n >= 30
    J = np.array([[got["sensitivity"]["observation"]["jacobian"][h][f] for f in got["feature_names"]]
                  for h in got["head_names"]])
    Jr = np.array(ref["jacobian"])
    np.testing.assert_allclose(J, Jr, rtol=1e-4, atol=1e-4 * np.abs(Jr).max())


def test_idbd_step_sizes_are_the_exponentiated_log_step_sizes():
    pytest.importorskip("tensorstore")
    from fadiag.checkpoint.alberta import read_tree

    tree, user = read_tree(ALB / "idbd")
    assert user["learner_config"]["optimizer"]["type"] == "IDBD"
    from fadiag.checkpoint.alberta import to_fadiag_state
    from fadiag.diagnostics.relevance import learner_state_from_state_dict, relevance_report

    module, extras = to_fadiag_state(tree)
    rep = relevance_report(learner_state_from_state_dict({**module, **extras}))
    want = np.exp(tree["trunk_optimizer_states.0.log_step_sizes"].astype(np.float64)).mean(0)
    assert list(rep["trunk"]["step_size_activity"].values()) == pytest.approx(want.tolist(), rel=1e-12)


def test_folder_without_learner_config_is_refused_unless_a_spec_says(tmp_path, run_cli):
    pytest.importorskip("tensorstore")
    import shutil

    d = tmp_path / "ck"
    shutil.copytree(ALB / "autostep_noln", d)
    meta = json.loads((d / "metadata" / "metadata").read_text())
    (d / "metadata" / "metadata").write_text(json.dumps({k: v for k, v in meta.items() if k != "learner_config"}))
    code, out, err = run_cli(["relevance", d, "-f", "json", "-q"])
    assert code == 2 and "learner_config" in err and "Traceback" not in err
    args = {"n_features": 5, "hidden": [6, 4], "n_heads": 3, "normalize": True, "use_layer_norm": False,
            "leaky_relu_slope": 0.2, "norm_eps": 1e-3}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"model": {"arch": "multihead", "args": args}}))
    code, out, err = run_cli(["relevance", d, "--spec", tmp_path / "s.yaml", "-f", "json", "-q", "--observation", OBS])
    assert code == 0, err
    ref = json.loads((ALB / "upstream_reference.json").read_text())["autostep_noln"]
    got = json.loads(out)
    J = [[got["sensitivity"]["observation"]["jacobian"][h][f] for f in got["feature_names"]] for h in got["head_names"]]
    np.testing.assert_allclose(J, ref["jacobian"], rtol=1e-4, atol=1e-6)


def test_a_folder_that_is_not_a_checkpoint_is_exit_2(tmp_path, run_cli):
    (tmp_path / "empty").mkdir()
    code, out, err = run_cli(["relevance", tmp_path / "empty"])
    assert code == 2 and "state/_METADATA" in err and "Traceback" not in err


def test_tree_mapping_without_tensorstore():
    """The orbax tree -> fadiag keys mapping, on a hand-made tree (no files, no tensorstore)."""
    from fadiag.checkpoint.alberta import spec_from_config, to_fadiag_state

    rng = np.random.default_rng(0)
    t = {"trunk_params.weights.0": rng.normal(size=(4, 3)), "trunk_params.biases.0": np.zeros(4),
         "head_params.weights.0": rng.normal(size=(1, 4)), "head_params.biases.0": np.array([0.5]),
         "head_params.weights.1": rng.normal(size=(1, 4)), "head_params.biases.1": np.array([-0.5]),
         "normalizer_state.mean": np.zeros(3), "normalizer_state.var": np.ones(3),
         "normalizer_state.sample_count": np.array(7.0),
         "trunk_optimizer_states.0.step_size": np.array(0.01), "trunk_optimizer_states.1.step_size": np.array(0.01),
         "head_optimizer_states.0.0.step_size": np.array(0.02), "head_optimizer_states.1.0.step_size": np.array(0.03),
         "trunk_traces.0": rng.normal(size=(4, 3))}
    module, extras = to_fadiag_state(t)
    assert module["heads.weight"].shape == (2, 4) and module["heads.bias"].tolist() == [0.5, -0.5]
    assert module["norm_count"].shape == () and int(module["norm_count"]) == 7
    # LMS with different scalars per layer: per-weight arrays holding each layer's value
    assert np.all(extras["step_sizes.trunk.0.weight"] == 0.01)
    assert extras["step_sizes.heads.weight"][:, 0].tolist() == [0.02, 0.03]
    assert np.array_equal(extras["traces.trunk.0.weight"], t["trunk_traces.0"])
    spec = spec_from_config(module, {"use_layer_norm": False, "leaky_relu_slope": 0.1,
                                     "normalizer": {"epsilon": 1e-4}}, "x")
    assert spec["model"]["args"] == {"n_features": 3, "hidden": [4], "n_heads": 2, "normalize": True,
                                     "use_layer_norm": False, "leaky_relu_slope": 0.1, "norm_eps": 1e-4}


def test_names_from_the_checkpoint_metadata(tmp_path, run_cli):
    """Feature and head names saved in the folder's metadata (relevance_to_dict's arguments) name the report;
    --feature-names / --head-names override them; malformed ones are exit 2."""
    pytest.importorskip("tensorstore")
    import shutil

    d = tmp_path / "ck"
    shutil.copytree(ALB / "autostep_ln", d)
    meta = json.loads((d / "metadata" / "metadata").read_text())
    feats, heads = ["src_ip", "dst_port", "len", "ttl", "flags"], ["malicious", "stage", "severity"]

    def write(**kw):
        (d / "metadata" / "metadata").write_text(json.dumps({**meta, **kw}))

    code0, out0, err0 = run_cli(["relevance", ALB / "autostep_ln", "-f", "json", "-q"])
    write(feature_names=feats, head_names=heads)
    code, out, err = run_cli(["relevance", d, "-f", "json", "-q"])
    assert code == code0 == 0, err + err0
    got, base = json.loads(out), json.loads(out0)
    assert got["feature_names"] == feats and got["head_names"] == heads
    assert base["feature_names"] == [f"feature_{i}" for i in range(5)]
    assert list(got["per_head"]) == heads and list(got["trunk"]["step_size_activity"]) == feats
    want = list(base["per_head"]["head_1"]["weight_relevance"].values())
    assert list(got["per_head"]["stage"]["weight_relevance"].values()) == want  # same numbers, new names
    code, out, err = run_cli(["relevance", d, "-f", "json", "-q", "--head-names", "a,b,c"])
    assert code == 0, err
    assert json.loads(out)["head_names"] == ["a", "b", "c"] and json.loads(out)["feature_names"] == feats
    write(feature_names=feats[:3])
    code, out, err = run_cli(["relevance", d, "-f", "json", "-q"])
    assert code == 2 and "metadata.feature_names has 3 names for 5 features" in err and "Traceback" not in err
    write(head_names=[1, 2, 3])
    code, out, err = run_cli(["relevance", d, "-f", "json", "-q"])
    assert code == 2 and "metadata.head_names must be a list of strings" in err and "Traceback" not in err
