"""fadiag reads a model as its author meant, and says how (fadiag.stream.readings, docs/models.md "How fadiag
reads the model"): a nanoGPT-layout checkpoint from a 3-line spec (constructor arguments and config class from
the checkpoint, logits from the readout, labels already shifted or not, never token 0 of a causal model), a
Lightning .ckpt of a residual-inside model with the contract's names, and the unit readings behind them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "fixtures"))
import make_nanogpt  # noqa: E402

SPEC = 'model: {arch: "model:GPT", config_class: "model:GPTConfig", args_from: model_args}\n' \
       "data: {path: DATA, batch_size: 64, batches: 4}\nloss: lm\n"


@pytest.fixture(scope="module")
def nanogpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nanogpt")
    make_nanogpt.make(folder, steps=60)
    return folder


def _audit(run_cli, folder, data, extra="", *args):
    (folder / "spec.yaml").write_text(SPEC.replace("DATA", data) + extra)
    assert len((folder / "spec.yaml").read_text().splitlines()) <= 4 or extra
    return run_cli(["audit", str(folder / "ckpt.pt"), "--spec", str(folder / "spec.yaml"), "-f", "json", "-q", *args])


def _reference_acc(folder, npz, shifted: bool, rows: int = 256) -> float:
    """Next-token accuracy from the model's own full-sequence logits (forward with targets), float64."""
    mod = make_nanogpt._module(folder)
    ck = torch.load(folder / "ckpt.pt", weights_only=True)
    m = mod.GPT(mod.GPTConfig(**ck["model_args"]))
    m.load_state_dict(ck["model"])
    m.double().eval()
    z = np.load(folder / npz)
    x, y = torch.from_numpy(z["x"][:rows]), torch.from_numpy(z["y"][:rows])
    with torch.no_grad():
        logits, _ = m(x, targets=x.clone())
    pred = logits.argmax(-1)
    if shifted:
        return float((pred == y).double().mean())
    return float((pred[:, :-1] == y[:, 1:]).double().mean())


def test_nanogpt_from_three_lines_same_accuracy_with_either_label_convention(nanogpt, run_cli):
    reps = {}
    for npz, shifted in (("eval.npz", False), ("eval_shifted.npz", True)):
        code, out, err = _audit(run_cli, nanogpt, npz)
        assert code in (0, 1), err
        rep = json.loads(out)
        st = rep["data"]["stream"]
        assert st["causal"] is True and st["pool"] == "mean"  # never token 0 of a causal model
        assert st["labels_shifted"] is shifted
        assert st["logits"] == "readout" and st["readout"] == ["transformer.ln_f", "lm_head"]
        assert st["residual"] == "inside" and st["blocks"] == "transformer.h.0..1"
        assert "model_args" in rep["data"]["model_args"] and "GPTConfig" in rep["data"]["model_args"]
        for word in ("causal", "pool mean", "already shifted" if shifted else "fadiag shifts", "lm_head"):
            assert word in st["read_as"]
        # the headline is the model's own next-token accuracy (a second shift would score x_{t+2})
        assert rep["headline_acc"] == pytest.approx(_reference_acc(nanogpt, npz, shifted), abs=1e-9)
        reps[npz] = rep
    a, b = reps["eval.npz"]["headline_acc"], reps["eval_shifted.npz"]["headline_acc"]
    assert a > 0.5 and abs(a - b) <= 0.02


def test_nanogpt_pool_cls_is_refused_and_ambiguous_labels_name_the_key(nanogpt, run_cli):
    code, _, err = _audit(run_cli, nanogpt, "eval.npz", "stream: {pool: cls}\n")
    assert code == 2 and "stream.pool" in err and "causal" in err
    z = np.load(nanogpt / "eval.npz")
    g = np.random.default_rng(0)
    np.savez(nanogpt / "eval_random.npz", x=z["x"], y=g.integers(0, 16, z["y"].shape))
    code, _, err = _audit(run_cli, nanogpt, "eval_random.npz")
    assert code == 2 and "data.labels_shifted" in err and len(err.strip().splitlines()) == 1
    (nanogpt / "spec.yaml").write_text(SPEC.replace("DATA", "eval_random.npz").replace(
        "batches: 4}", "batches: 4, labels_shifted: true}"))
    code, out, err = run_cli(["audit", str(nanogpt / "ckpt.pt"), "--spec", str(nanogpt / "spec.yaml"), "-f", "json"])
    assert code in (0, 1), err
    assert "data.labels_shifted" in json.loads(out)["data"]["stream"]["read_as"]


def test_measure_shift_and_causal_units():
    from fadiag.stream import Stream, StreamView
    from fadiag.stream.readings import measure_causal, measure_shift

    x = torch.arange(40).view(4, 10)
    assert measure_shift(x, x) == (1.0, 0.0)
    y = torch.cat([x[:, 1:], torch.full((4, 1), 99)], 1)
    assert measure_shift(x, y) == (0.0, 1.0)
    y[:, -1] = -100  # an ignored last label changes nothing
    assert measure_shift(x, y) == (0.0, 1.0)

    class Mix(nn.Module):  # bidirectional: every token sees the row mean
        def __init__(self, causal):
            super().__init__()
            self.causal = causal
            self.emb = nn.Embedding(50, 4)
            self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

        def forward(self, ids):
            h = self.emb(ids)
            for b in self.blocks:
                c = h.cumsum(1) / torch.arange(1, h.shape[1] + 1).view(1, -1, 1) if self.causal else h.mean(1, True)
                h = h + b(c)
            return h.sum(-1)

    for causal in (True, False):
        v = StreamView(Mix(causal), Stream(blocks=("blocks.0", "blocks.1")))
        assert measure_causal(v, x) is causal
    assert measure_causal(v, torch.randn(4, 10)) is None  # not token ids
    # the pooling a spec leaves open, per architecture: never token 0 of a causal model
    from fadiag.stream.readings import read_pool

    want = {(True, "lm", "default"): "mean", (True, "ce", "preset"): "last", (False, "ce", "default"): "mean",
            (False, "ce", "preset"): "cls"}
    for (causal, loss, frm), pool in want.items():
        v = StreamView(Mix(causal), Stream(blocks=("blocks.0", "blocks.1"), pool="cls", loss=loss, pool_from=frm))
        got = read_pool(v, x).stream
        assert got.pool == pool and got.causal is causal and dict(got.why)["pool"]


LIT = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, h):
        return h + torch.tanh(self.fc(h))  # the block adds its own residual


class Net(nn.Module):
    def __init__(self, d_in=8, d=6, depth=3, n_classes=3):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.blocks = nn.ModuleList([Block(d) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_classes)

    def forward(self, x):
        h = self.embed(x)
        for b in self.blocks:
            h = b(h)
        return self.head(self.norm(h))
'''


def test_lightning_ckpt_residual_inside_measured_not_assumed(tmp_path, run_cli):
    (tmp_path / "lit_user.py").write_text(LIT)
    sys.path.insert(0, str(tmp_path))
    try:
        import lit_user
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("lit_user", None)
    hp = {"d_in": 8, "d": 6, "depth": 3, "n_classes": 3, "lr": 1e-3}  # lr: the LightningModule's, not Net's
    torch.manual_seed(0)
    net = lit_user.Net(**{k: v for k, v in hp.items() if k != "lr"})
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
                "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": hp, "optimizer_states": [], "lr_schedulers": [], "loops": {}, "callbacks": {}},
               tmp_path / "run.ckpt")
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    (tmp_path / "s.yaml").write_text('model: {arch: "lit_user:Net", args_from: hyper_parameters}\n'
                                     "data: {path: d.npz, batch_size: 16, batches: 4}\n")
    code, out, err = run_cli(["audit", str(tmp_path / "run.ckpt"), "--spec", str(tmp_path / "s.yaml"), "-f", "json"])
    assert code in (0, 1), err
    rep = json.loads(out)
    st = rep["data"]["stream"]
    assert st["residual"] == "inside" and "measured" in st["read_as"]
    assert "not taken by the constructor: lr" in rep["data"]["model_args"]
    # the stream as the model forms it (an outside reading would add h_l again)
    with torch.no_grad():
        h = [net.embed(x[:16])]
        for b in net.blocks:
            h.append(b(h[-1]))
    ref = [float(torch.median(t.double().norm(dim=1))) for t in h]
    assert rep["residual_norms"] == pytest.approx(ref, rel=1e-5)


def test_mse_on_a_headless_output_is_bad_input_with_a_pointer():
    from fadiag.errors import SpecError
    from fadiag.stream import per_sample_loss

    with pytest.raises(SpecError, match="readout: probe"):
        per_sample_loss(torch.randn(4, 3, 5), torch.randn(4), "mse")
    assert per_sample_loss(torch.randn(4, 1), torch.randn(4), "mse").shape == (4,)


def test_config_class_is_never_imported_from_a_found_spec_or_an_embedded_one(nanogpt, run_cli):
    """A sidecar spec naming model.config_class needs --trust-code; an embedded one may not name it at all."""
    side = nanogpt / "ckpt.yaml"
    side.write_text(SPEC.replace("DATA", "eval.npz").replace('arch: "model:GPT"', "arch: resmlp"))
    try:
        code, _, err = run_cli(["audit", str(nanogpt / "ckpt.pt"), "-q"])
        assert code == 2 and "model.config_class" in err and "--trust-code" in err
    finally:
        side.unlink()
    ck = torch.load(nanogpt / "ckpt.pt", weights_only=True)
    ck["fadiag_spec"] = {"model": {"arch": "resmlp", "config_class": "model:GPTConfig"}}
    torch.save(ck, nanogpt / "embedded.pt")
    code, _, err = run_cli(["audit", str(nanogpt / "embedded.pt"), "-q"])
    assert code == 2 and "config class" in err


def test_nanogpt_frozen_baseline_reads_the_model_as_the_audit_does(nanogpt, run_cli):
    """--frozen-baseline train runs before the audit's first pass: it must already make the logits from the
    readout and take the labels as shifted (a model-output read would be exit 2, a double shift ~0 accuracy)."""
    z = np.load(nanogpt / "eval_shifted.npz")
    np.savez(nanogpt / "train_shifted.npz", x=z["x"][-128:], y=z["y"][-128:])
    (nanogpt / "fb.yaml").write_text(SPEC.replace("DATA", "eval_shifted.npz").replace(
        "batches: 4}", "batches: 4, train_path: train_shifted.npz}"))
    code, out, err = run_cli(["audit", str(nanogpt / "ckpt.pt"), "--spec", str(nanogpt / "fb.yaml"),
                              "--frozen-baseline", "train", "-f", "json", "-q"])
    assert code in (0, 1), err
    rep = json.loads(out)
    assert rep["data"]["stream"]["labels_shifted"] is True and rep["flags"][3]["flagged"] is not None
    assert 0.0 <= rep["frozen_baseline_acc"] <= 1.0
