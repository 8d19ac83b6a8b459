"""User model classes from the spec, and the trained frozen-blocks baseline of diagnostic (d)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _tol import assert_close, assert_tree_close
from conftest import TINY_ARGS, tiny_data, tiny_resmlp

USER_MODULE = '''
import torch
from torch import nn


class TwoBlock(nn.Module):
    """A user model honouring the reference contract (embed, blocks, out_ln, out_head, return_hidden)."""

    def __init__(self, d_in, d, n_classes):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d)) for _ in range(2)])
        self.out_ln = nn.LayerNorm(d)
        self.out_head = nn.Linear(d, n_classes)

    def forward(self, x, return_hidden=False):
        h = self.embed(x)
        hs = [h]
        for b in self.blocks:
            h = h + b(h)
            hs.append(h)
        out = self.out_head(self.out_ln(h))
        return (out, hs) if return_hidden else out
'''


def test_user_class_from_spec_is_audited(tmp_path, run_cli):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("my_models_ref", tmp_path / "my_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    m = mod.TwoBlock(8, 6, 3)
    torch.save({"model": m.state_dict()}, tmp_path / "user.pt")
    x, y = tiny_data(64, 8, 3)
    np.savez(tmp_path / "data.npz", x=x.numpy(), y=y.numpy())
    (tmp_path / "user.yaml").write_text(yaml.safe_dump({
        "model": {"arch": "my_models:TwoBlock", "args": {"d_in": 8, "d": 6, "n_classes": 3}},
        "data": {"source": "npz", "path": "data.npz", "batch_size": 16, "batches": 4}}))
    code, out, err = run_cli(["audit", tmp_path / "user.pt", "-f", "json", "-q", "--trust-code"])  # a sidecar
    assert code in (0, 1), err
    rep = json.loads(out)
    with torch.no_grad():
        _, hs = m(x[:16], return_hidden=True)
    ref = [float(torch.median(h.double().norm(dim=-1))) for h in hs]  # the reference's lower median
    assert_close(rep["residual_norms"], ref, "float32", atol=0)  # a float32 forward on both sides


def test_unknown_user_module_is_a_spec_error(tmp_path, tiny_resmlp_ckpt, run_cli):
    f = tiny_resmlp_ckpt(spec_overrides={"model": {"arch": "no_such_pkg.mod:Net"}})
    code, out, err = run_cli(["audit", f.ckpt, "--trust-code"])
    assert code == 2 and "cannot import 'no_such_pkg.mod'" in err


def test_frozen_baseline_train_matches_the_documented_recipe(tiny_resmlp_ckpt, run_cli, tmp_path):
    """--frozen-baseline train = blocks at a fresh seeded init, embed/out_ln/head trained with BP_RECIPE."""
    from fadiag.diagnostics.protocol import accuracy
    from fadiag.training import BP_RECIPE, train_frozen_baseline

    xt, yt = tiny_data(96, 8, 3, seed=11)
    np.savez(tmp_path / "train.npz", x=xt.numpy(), y=yt.numpy())
    f = tiny_resmlp_ckpt(folder=tmp_path, spec_overrides={"data": {"train_path": "train.npz"}})
    code, out, err = run_cli(["audit", f.ckpt, "--frozen-baseline", "train", "--seed", "3", "-f", "json", "-q"])
    rep = json.loads(out)
    assert rep["frozen_baseline_source"].startswith("trained: frozen blocks (seed 3)")
    # Reproduce by hand: same seed, same recipe.
    torch.manual_seed(3)
    ref = tiny_resmlp(seed=3)
    before = {k: v.clone() for k, v in ref.blocks.state_dict().items()}
    train_frozen_baseline(ref, xt, yt, BP_RECIPE, seed=3)
    assert all(torch.equal(before[k], v) for k, v in ref.blocks.state_dict().items())  # blocks frozen
    with torch.no_grad():
        acc = accuracy([ref(xb) for xb, _ in f.batches()], [yb for _, yb in f.batches()])
    assert rep["frozen_baseline_acc"] == acc
    flag_d = next(fl for fl in rep["flags"] if fl["id"] == "d")
    assert flag_d["flagged"] is not None
    assert abs(flag_d["value"] - (rep["headline_acc"] - acc) * 100) < 1e-9


def test_frozen_baseline_train_needs_train_path(tiny_resmlp_ckpt, run_cli):
    f = tiny_resmlp_ckpt()
    code, out, err = run_cli(["audit", f.ckpt, "--frozen-baseline", "train"])
    assert code == 2 and "train_path" in err


def test_depth_ladder_trains_exactly_the_last_k_blocks():
    from fadiag.training import BP_RECIPE, train_frozen_baseline

    m = tiny_resmlp(seed=2)
    before = [{k: v.clone() for k, v in b.state_dict().items()} for b in m.blocks]
    x, y = tiny_data(64, 8, 3, seed=4)
    train_frozen_baseline(m, x, y, {**BP_RECIPE, "epochs": 1}, seed=0, trainable_last=1)
    moved = [any(not torch.equal(before[i][k], v) for k, v in b.state_dict().items()) for i, b in enumerate(m.blocks)]
    assert moved == [False, False, True]


def test_trainable_blocks_needs_train_and_a_valid_count(tiny_resmlp_ckpt, run_cli, tmp_path):
    xt, yt = tiny_data(48, 8, 3, seed=11)
    np.savez(tmp_path / "train.npz", x=xt.numpy(), y=yt.numpy())
    f = tiny_resmlp_ckpt(folder=tmp_path, spec_overrides={"data": {"train_path": "train.npz"}})
    code, _, err = run_cli(["audit", f.ckpt, "--trainable-blocks", "1"])
    assert code == 2 and "--frozen-baseline train" in err
    code, _, err = run_cli(["audit", f.ckpt, "--frozen-baseline", "train", "--trainable-blocks", "9"])
    assert code == 2 and "0..3" in err
    code, out, err = run_cli(["audit", f.ckpt, "--frozen-baseline", "train", "--trainable-blocks", "2", "-q",
                              "-f", "json"])
    assert code in (0, 1), err
    assert "last 2 block(s) trainable" in json.loads(out)["frozen_baseline_source"]


def test_digits_source_reads_sklearn_bundled_data(tmp_path, run_cli):
    """DESIGN.md's spec shape lists data.source digits: scikit-learn's bundled copy, nothing downloaded."""
    sk = pytest.importorskip("sklearn.datasets")
    from fadiag.models.resmlp import ResMLP

    torch.manual_seed(0)
    m = ResMLP(64, 8, 2, 10)
    torch.save({"model": m.state_dict()}, tmp_path / "d.pt")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({
        "model": {"arch": "resmlp", "args": {"in_dim": 64, "width": 8, "depth": 2, "n_classes": 10}},
        "data": {"source": "digits", "batch_size": 100, "batches": 3}}))
    code, out, err = run_cli(["audit", tmp_path / "d.pt", "-f", "json", "-q"])
    assert code in (0, 1), err
    rep = json.loads(out)
    assert rep["data"]["source"] == "sklearn digits" and rep["data"]["split"].startswith("test (360 of 1797")
    d, split = sk.load_digits(), pytest.importorskip("sklearn.model_selection").train_test_split
    x = torch.from_numpy((split(d.data, test_size=0.2, random_state=0, stratify=d.target)[1][:100] / 16).astype("float32"))
    with torch.no_grad():
        _, hs = m(x, return_hidden=True)
    assert_close(rep["residual_norms"][0], float(torch.median(hs[0].double().norm(dim=-1))), "float32", atol=0)


TRAJECTORY = Path(__file__).resolve().parents[1] / "golden" / "recipe_trajectory.json"


def _short_trajectory(method: str) -> list:
    """The example recipe for a few steps: the shipped init, the first 256 training rows, 3 epochs of 4 seeded
    minibatches (12 optimiser steps, one thread). After each epoch: the mean CE on a fixed probe batch (the
    first 128 test rows) and the L2 norm of all parameters, both in float64."""
    from conftest import EXAMPLES
    from fadiag.examples.train_resmlp import ARCH
    from fadiag.models.resmlp import ResMLP
    from fadiag.training import BP_RECIPE, DFA_RECIPE, train_bp, train_dfa

    z = np.load(EXAMPLES / "mnist1d_train.npz")
    x, y = torch.from_numpy(z["x"][:256]), torch.from_numpy(z["y"][:256])
    zt = np.load(EXAMPLES / "mnist1d_test.npz")
    xp, yp = torch.from_numpy(zt["x"][:128]), torch.from_numpy(zt["y"][:128])
    m = ResMLP(**ARCH)
    m.load_state_dict(torch.load(EXAMPLES / f"resmlp_{method}_init.pt", weights_only=True)["model"])
    points = []

    def progress(epoch, _total):
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(m(xp).double(), yp).item()
        norm = math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in m.parameters()))
        points.append({"epoch": epoch, "probe_loss": loss, "param_norm": norm})
        m.train()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if method == "bp":
            train_bp(m, x, y, {**BP_RECIPE, "epochs": 3}, seed=0, progress=progress)
        else:
            from fadiag.training import make_feedback

            fb = make_feedback(ARCH["depth"] + 1, ARCH["n_classes"], ARCH["width"], seed=1234)  # --feedback-seed
            train_dfa(m, x, y, fb, {**DFA_RECIPE, "epochs": 3}, seed=0, progress=progress)
    finally:
        torch.set_num_threads(threads)
    return points


@pytest.mark.parametrize("method", ["bp", "dfa"])
def test_recipe_still_trains_the_stored_short_trajectory(method):
    """The fast stand-in for the bit-for-bit retraining below (which takes minutes and is ``-m slow``): the
    recipe code (data order, optimiser, schedule, DFA feedback path) still takes the same 12 steps. Float32
    training, so float32 tolerance; a changed learning rate, schedule, seed or feedback rule moves the probe
    loss by far more (checked: lr x1.1 moves it by 5e-3 relative)."""
    got = _short_trajectory(method)
    if os.environ.get("FADIAG_REGEN_GOLDEN") == "1":
        stored = json.loads(TRAJECTORY.read_text()) if TRAJECTORY.exists() else {}
        stored[method] = got
        TRAJECTORY.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    want = json.loads(TRAJECTORY.read_text())[method]
    assert [p["epoch"] for p in got] == [1, 2, 3]
    assert got[-1]["probe_loss"] < got[0]["probe_loss"] or method == "dfa"
    assert_tree_close(got, want, "float32", atol=0.0)


@pytest.mark.slow
def test_bp_example_is_reproduced_bit_for_bit_by_its_recipe():
    """Provenance, checked: the shipped resmlp_bp.pt is what fadiag/examples/train_resmlp.py trains (seed 0)."""
    from conftest import EXAMPLES
    from fadiag.examples.train_resmlp import ARCH
    from fadiag.models.resmlp import ResMLP
    from fadiag.training import BP_RECIPE, train_bp

    z = np.load(EXAMPLES / "mnist1d_train.npz")
    x, y = torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
    torch.manual_seed(0)
    m = ResMLP(**ARCH)
    init = torch.load(EXAMPLES / "resmlp_bp_init.pt", weights_only=True)["model"]
    assert all(torch.equal(m.state_dict()[k], init[k]) for k in init)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the recipe's setting: float summation order depends on it
    try:
        train_bp(m, x, y, BP_RECIPE, seed=0)
    finally:
        torch.set_num_threads(threads)
    ref = torch.load(EXAMPLES / "resmlp_bp.pt", weights_only=True)["model"]
    worst = max(float((m.state_dict()[k] - ref[k]).abs().max()) for k in ref)
    assert worst <= 1e-4, worst  # bit-identical on the 2-core machines it was made on (worst = 0.0)


def test_user_class_without_the_contract_is_bad_input(tmp_path, run_cli):
    (tmp_path / "plain_models.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Plain(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(8, 3)\n\n"
        "    def forward(self, x):\n        return self.lin(x)\n")
    import importlib.util

    spec = importlib.util.spec_from_file_location("plain_ref", tmp_path / "plain_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save({"model": mod.Plain().state_dict()}, tmp_path / "p.pt")
    x, y = tiny_data(64, 8, 3)
    np.savez(tmp_path / "data.npz", x=x.numpy(), y=y.numpy())
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({
        "model": {"arch": "plain_models:Plain"},
        "data": {"source": "npz", "path": "data.npz", "batch_size": 16, "batches": 4}}))
    code, out, err = run_cli(["audit", tmp_path / "p.pt", "--trust-code"])
    assert code == 2 and "return_hidden=True" in err and len(err.strip().splitlines()) == 1
