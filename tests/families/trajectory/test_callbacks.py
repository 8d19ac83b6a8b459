"""fadiag.callbacks (docs/trajectory.md): a Monitor's audit gives the model back as it was (modes, .grad,
requires_grad, hooks, RNG) and keeps nothing of it; the budget schedule; lazy imports; and inside a real
Lightning fit and a real Hugging Face Trainer run on CPU, the JSONL equals `fadiag trajectory` over the
checkpoints the run saved at the same steps."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch

from fadiag.callbacks import Monitor, scalars
from fadiag.models.resmlp import ResMLP

from conftest import EXAMPLES, REPO
from test_trajectory import assert_same_records

SPEC = """model:
  arch: resmlp
  args: {in_dim: 40, width: 16, depth: 2, n_classes: 10}
data:
  path: %s
  batches: 2
  batch_size: 32
"""


def _spec(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text(SPEC % (EXAMPLES / "mnist1d_test.npz"))
    return p


def _model():
    torch.manual_seed(0)
    return ResMLP(in_dim=40, width=16, depth=2, n_classes=10)


def test_audit_restores_the_model_and_keeps_nothing(tmp_path):
    m = _model()
    m.train()
    m.blocks[0].eval()  # a mixed mode must come back as it was
    m.blocks[1].requires_grad_(False)
    grads = {n: torch.randn_like(p) for n, p in m.named_parameters()}
    for n, p in m.named_parameters():
        p.grad = grads[n].clone() if "blocks.0" not in n else None
    seen = []
    h1 = m.register_forward_hook(lambda *a: seen.append(1))
    h2 = m.blocks[0].register_full_backward_hook(lambda *a: None)
    modes = [x.training for x in m.modules()]
    flags = [p.requires_grad for p in m.parameters()]
    rng = torch.get_rng_state()
    mon = Monitor(str(_spec(tmp_path)), every=1, log=tmp_path / "m.jsonl", tensorboard=_Writer())
    rec = mon.step(m, 1)
    assert rec["step"] == 1 and len(rec["residual_norms"]) == 3
    assert [x.training for x in m.modules()] == modes
    assert [p.requires_grad for p in m.parameters()] == flags
    for n, p in m.named_parameters():
        assert (p.grad is None) if "blocks.0" in n else torch.equal(p.grad, grads[n])
    assert list(m._forward_hooks) == [h1.id] and list(m.blocks[0]._backward_hooks) == [h2.id]
    assert torch.equal(torch.get_rng_state(), rng)
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None  # the monitor holds no reference to the model (nor its activations)
    tensors = [v for v in vars(mon).values() if isinstance(v, torch.Tensor)]
    assert tensors == []
    assert mon.tensorboard.scalars["fadiag/h_norm/0"] == [(1, rec["residual_norms"][0])]


class _Writer:
    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, v, step):
        self.scalars.setdefault(tag, []).append((step, v))

    def flush(self):
        pass


def test_scalars_and_first_flag_logged_once(tmp_path, caplog):
    m = _model()
    with torch.no_grad():  # an exploded stream: (a) fires at the first audit, and is logged once
        m.blocks[1].fc2.weight.mul_(1e4)
    mon = Monitor(str(_spec(tmp_path)), every=2, log=None)
    with caplog.at_level("WARNING", logger="fadiag"):
        assert mon.step(m, 1) is None
        r2, r4 = mon.step(m, 2), mon.step(m, 4)
    assert [f["id"] for f in r2["first_flagged"]] == [f["id"] for f in r2["flags"] if f["flagged"]]
    assert r4["first_flagged"] == []
    assert sum("(a) residual stream exploded" in r.message for r in caplog.records) == 1
    assert mon.first_flagged["a"]["step"] == 2 and mon.first_flagged["a"]["layer"] == 2
    s = scalars(r2)
    assert s["fadiag/flag/a"] == 1.0 and s["fadiag/g_norm/2"] == r2["bp_grad_norms"][2]


def test_budget_schedule(monkeypatch, tmp_path):
    """Default schedule: the first call, then only while audit time <= budget x training time."""
    import fadiag.callbacks as C

    clock = [0.0]
    monkeypatch.setattr(C.time, "perf_counter", lambda: clock[0])
    mon = Monitor(None, log=None)

    def fake_audit(model, step):  # each audit costs 1 s of the fake clock
        clock[0] += 1.0
        mon.records += 1
        mon._last_cost = 1.0
        mon._spent += 1.0

    audited, train = [], 0.0
    for step in range(1, 400):
        if mon.due(step):
            audited.append(step)
            fake_audit(None, step)
            # after every audit, the first included: audit time <= budget x training time (once there is any)
            assert len(audited) == 1 or mon._spent <= mon.budget * train + 1e-9, (step, mon._spent, train)
        clock[0] += 0.5  # a training step
        train += 0.5
    assert audited[0] == 1 and mon.budget == 0.04
    assert len(audited) >= mon.budget * train - 2  # and it does use the budget: 0.04 x 199.5 s of 1-s audits
    assert Monitor(None, every=50, log=None).due(100) and not Monitor(None, every=50, log=None).due(101)


def test_import_is_lazy():
    code = ("import sys, fadiag.callbacks; bad = [m for m in ('lightning', 'pytorch_lightning', 'transformers') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr


def test_lightning_fit(tmp_path, run_cli):
    L = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    from fadiag.callbacks import LightningCallback

    z = np.load(EXAMPLES / "mnist1d_train.npz")
    x, y = torch.from_numpy(z["x"][:384]), torch.from_numpy(z["y"][:384])
    spec = _spec(tmp_path)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = _model()

        def training_step(self, b, i):
            return torch.nn.functional.cross_entropy(self.model(b[0]), b[1])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), 1e-2)

    cb = LightningCallback(str(spec), every=4, log=tmp_path / "monitor.jsonl")
    ck = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    logger = L.pytorch.loggers.CSVLogger(tmp_path / "logs", name="", version="")
    L.Trainer(max_steps=12, callbacks=[cb, ck], logger=logger, enable_progress_bar=False, enable_model_summary=False,
              accelerator="cpu", devices=1, enable_checkpointing=True).fit(Module(), DataLoader(TensorDataset(x, y),
                                                                                                batch_size=32))
    import csv

    with open(tmp_path / "logs" / "metrics.csv") as fh:  # the scalars reached the trainer's logger
        logged = [r for r in csv.DictReader(fh) if r.get("fadiag/h_norm/0")]
    assert [int(r["step"]) for r in logged] == [4, 8, 12]
    code, out, errtext = run_cli(["trajectory", str(tmp_path / "ckpt"), "--spec", str(spec), "-f", "json"])
    rep = json.loads(out)
    assert rep["steps"] == [4, 8, 12] and {p["step_source"] for p in rep["points"]} == {"checkpoint:global_step"}
    assert_same_records(rep["points"], tmp_path / "monitor.jsonl")


def test_hf_trainer(tmp_path, run_cli):
    pytest.importorskip("accelerate")
    tf = pytest.importorskip("transformers")
    from fadiag.callbacks import TrainerCallback

    from fadiag.examples.tiny_lm import TokenRows, tiny_gpt2, tokens

    tok = tokens(80, 16, 32)
    np.savez(tmp_path / "eval.npz", x=tok[:16], y=tok[:16])
    model = tiny_gpt2(32, 16, 16, 2, 2)
    cb = TrainerCallback(data=tmp_path / "eval.npz", every=4, batches=2, batch_size=8, log=tmp_path / "monitor.jsonl")
    args = tf.TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=12, save_steps=4, learning_rate=1e-2,
                                per_device_train_batch_size=8, report_to=[], use_cpu=True, logging_steps=100,
                                disable_tqdm=True, seed=0)
    tf.Trainer(model=model, args=args, train_dataset=TokenRows(tok[16:]), callbacks=[cb]).train()
    code, out, errtext = run_cli(["trajectory", str(tmp_path / "run"), "--data", str(tmp_path / "eval.npz"),
                                  "--batches", "2", "--batch-size", "8", "-f", "json"])
    rep = json.loads(out)
    assert rep["steps"] == [4, 8, 12], errtext
    assert {p["step_source"] for p in rep["points"]} == {"trainer_state.json:global_step"}
    assert_same_records(rep["points"], tmp_path / "monitor.jsonl")
