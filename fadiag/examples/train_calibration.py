"""Recipe for the seeded calibration runs of docs/science.md §1 ("Calibration table"): small pre-LN ResMLPs on
the shipped MNIST-1D, healthy (backprop) and degenerate (DFA at the shipped example's constant learning rate),
each seconds on one CPU core.

    python -m fadiag.examples.train_calibration --out runs [--seeds 6] [--epochs 3] [--dfa-epochs 6]

Reads checkpoints_example/mnist1d_{train,test}.npz (``--data``; written by fadiag.examples.train_resmlp). For seed
s = 0..seeds-1: ``bp_s{s}.pt`` (BP recipe, ``--epochs`` epochs), ``dfa_s{s}.pt`` (DFA recipe, feedback seed
1000 + s, ``--dfa-epochs`` epochs) and ``init_s{s}.pt`` (the BP run's initialisation), each with a sidecar spec
recording ONE frozen-blocks baseline (seed 0, BP recipe, ``--epochs`` epochs) measured on the audit rows;
``runs.json`` lists the runs and their test accuracy. Architecture: in 40, width 32, depth 4, hidden_mult 1,
10 classes. Then

    fadiag calibrate runs/bp_*.pt -d runs/dfa_*.pt -o runs/calibration.yaml
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from fadiag.models.resmlp import ResMLP
from fadiag.training import (BP_RECIPE, DFA_RECIPE, accuracy, make_feedback, train_bp, train_dfa,
                             train_frozen_baseline)

ARCH = {"in_dim": 40, "width": 32, "depth": 4, "n_classes": 10, "hidden_mult": 1}
AUDIT_ROWS = 1024  # 8 batches of 128: the rows the audit reads


def _load(p: Path):
    z = np.load(p)
    return torch.from_numpy(z["x"]), torch.from_numpy(z["y"])


def spec_yaml(method: str, test: str, frozen_acc: float) -> str:
    args = ", ".join(f"{k}: {v}" for k, v in ARCH.items())
    return ("# fadiag spec (written by fadiag.examples.train_calibration)\n"
            f"model:\n  arch: resmlp\n  args: {{{args}}}\n"
            f"checkpoint:\n  state_dict: model\ndata:\n  source: npz\n  path: {test}\n  batch_size: 128\n"
            f"  batches: 8\naudit:\n  method_name: {method}\n  frozen_baseline_acc: {frozen_acc:.4f}\n")


def make_runs(out: Path, data: Path, seeds: int, epochs: int, dfa_epochs: int) -> list:
    """Train the runs into ``out``; returns [{run, role, method, seed, test_acc}]."""
    out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = _load(data / "mnist1d_train.npz"), _load(data / "mnist1d_test.npz")
    test = os.path.relpath((data / "mnist1d_test.npz").resolve(), out.resolve())  # no host path in the spec
    bp_recipe, dfa_recipe = dict(BP_RECIPE, epochs=epochs), dict(DFA_RECIPE, epochs=dfa_epochs)
    torch.manual_seed(0)
    base = ResMLP(**ARCH)
    train_frozen_baseline(base, xtr, ytr, bp_recipe, seed=0)
    frozen = accuracy(base, xte[:AUDIT_ROWS], yte[:AUDIT_ROWS])
    runs = []
    for s in range(seeds):
        for method, role in (("BP", "healthy"), ("DFA", "degenerate")):
            torch.manual_seed(s)
            m = ResMLP(**ARCH)
            if method == "BP":  # its initialisation too: what (c) reads at init (docs/science.md §1 (c))
                torch.save({"model": m.state_dict()}, out / f"init_s{s}.pt")
                (out / f"init_s{s}.yaml").write_text(spec_yaml("init", test, frozen))
                runs.append({"run": f"init_s{s}.pt", "role": "init", "method": "init", "seed": s,
                             "test_acc": accuracy(m, xte, yte)})
                train_bp(m, xtr, ytr, bp_recipe, seed=s)
                extra = {}
            else:
                fb = make_feedback(ARCH["depth"] + 1, ARCH["n_classes"], ARCH["width"], 1000 + s)
                train_dfa(m, xtr, ytr, fb, dfa_recipe, seed=s)
                extra = {"feedback": fb}
            name = f"{method.lower()}_s{s}"
            torch.save({"model": m.state_dict(), **extra}, out / f"{name}.pt")
            (out / f"{name}.yaml").write_text(spec_yaml(method, test, frozen))
            runs.append({"run": f"{name}.pt", "role": role, "method": method, "seed": s,
                         "test_acc": accuracy(m, xte, yte)})
    (out / "runs.json").write_text(json.dumps({"arch": ARCH, "frozen_baseline_audit_rows_acc": frozen,
                                               "bp_recipe": bp_recipe, "dfa_recipe": dfa_recipe, "runs": runs},
                                              indent=2) + "\n")
    return runs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs")
    ap.add_argument("--data", default="checkpoints_example")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--dfa-epochs", type=int, default=6)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    runs = make_runs(Path(a.out), Path(a.data), a.seeds, a.epochs, a.dfa_epochs)
    print(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
