"""Overhead of fadiag.callbacks' default schedule (docs/trajectory.md: at most 5% of training time).

    python benchmarks/bench_callbacks.py [--epochs 10] [--hf-steps 300] [--repeats 2]

Two trainings, each run without and with a callback in the same process, alternating, best of --repeats:

  DFA     the shipped DFA recipe (fadiag.training.train_dfa, DFA_RECIPE, --epochs of it) on the shipped
          MNIST-1D; Monitor(spec of the DFA example: 8 eval batches of 128 rows), default schedule, on_step
  HF      a tiny GPT-2 causal LM (2 layers, d 64, 4 heads, vocab 256, 64 tokens, batch 16) under a Hugging Face
          Trainer on CPU; TrainerCallback(2 eval batches of 8 sequences), default schedule

Printed: CPU seconds of this process for each (``time.process_time``: on a shared, loaded machine wall time
varies by tens of percent from run to run, CPU time far less), the ratio with/without (the overhead), the
audits done, their share of the training's CPU time, and the cost of one audit in training steps. The
schedule itself budgets wall time. One torch thread (what the recipes use). Results in docs/trajectory.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def dfa(epochs: int, monitor: bool, tmp: Path) -> tuple:
    from fadiag.callbacks import Monitor
    from fadiag.examples.train_resmlp import ARCH
    from fadiag.examples.train_trajectory import DATA, load, run_spec
    from fadiag.models.resmlp import ResMLP
    from fadiag.training import DFA_RECIPE, make_feedback, train_dfa

    (tmp / "run.yaml").write_text(run_spec(DATA))
    xtr, ytr = load(DATA / "mnist1d_train.npz")
    torch.manual_seed(0)
    model = ResMLP(**ARCH)
    fb = make_feedback(ARCH["depth"] + 1, ARCH["n_classes"], ARCH["width"], 1234)
    mon = timed(Monitor(str(tmp / "run.yaml"), log=tmp / "m.jsonl")) if monitor else None
    t = time.process_time()
    train_dfa(model, xtr, ytr, fb, dict(DFA_RECIPE, epochs=epochs), on_step=mon.step if mon else None)
    return time.process_time() - t, mon


def timed(mon):
    """``mon`` counting the CPU seconds of its audits in ``mon.cpu``."""
    audit, mon.cpu = mon.audit, 0.0

    def run(model, step):
        t = time.process_time()
        try:
            return audit(model, step)
        finally:
            mon.cpu += time.process_time() - t

    mon.audit = run
    return mon


def hf(steps: int, monitor: bool, tmp: Path) -> tuple:
    import transformers as tf

    from fadiag.callbacks import TrainerCallback

    from fadiag.examples.tiny_lm import TokenRows, tiny_gpt2, tokens

    tok = tokens(16 + 16 * 64, 64, 256)
    np.savez(tmp / "eval.npz", x=tok[:16], y=tok[:16])
    model = tiny_gpt2(256, 64, 64, 2, 4)
    cbs = [TrainerCallback(data=tmp / "eval.npz", batches=2, batch_size=8, log=tmp / "m.jsonl")] if monitor else []
    args = tf.TrainingArguments(output_dir=str(tmp / "run"), max_steps=steps, save_strategy="no", report_to=[],
                                per_device_train_batch_size=16, use_cpu=True, disable_tqdm=True, logging_steps=10**6,
                                dataloader_num_workers=0, seed=0)
    if cbs:
        timed(cbs[0].monitor)
    trainer = tf.Trainer(model=model, args=args, train_dataset=TokenRows(tok[16:]), callbacks=cbs)
    t = time.process_time()
    trainer.train()
    return time.process_time() - t, cbs[0].monitor if cbs else None


def compare(name: str, fn, n: int, repeats: int, steps: int) -> None:
    best = {False: float("inf"), True: float("inf")}
    mon = None
    for _ in range(repeats):
        for with_monitor in (False, True):
            with tempfile.TemporaryDirectory() as d:
                t, m = fn(n, with_monitor, Path(d))
            best[with_monitor] = min(best[with_monitor], t)
            mon = m or mon
    per_step = best[False] / steps
    per_audit = mon.cpu / max(1, mon.records)
    print(f"{name:4s} {steps} steps, CPU s: without {best[False]:.2f}, with {best[True]:.2f}, ratio "
          f"{best[True] / best[False]:.3f}; {mon.records} audits, {mon.cpu:.2f} s in audits "
          f"= {mon.cpu / (best[True] - mon.cpu):.3f} of training; one audit = {per_audit / per_step:.1f} "
          "training steps", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the DFA recipe (125 steps each)")
    ap.add_argument("--hf-steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread")
    compare("DFA", dfa, a.epochs, a.repeats, a.epochs * 125)
    compare("HF", hf, a.hf_steps, a.repeats, a.hf_steps)


if __name__ == "__main__":
    main()
