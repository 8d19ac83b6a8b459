"""Recipe for checkpoints_example/resmlp_{bp,dfa}.pt: pre-LN ResMLPs on MNIST-1D (docs/science.md §5).

    python -m fadiag.examples.train_resmlp --out checkpoints_example [--seed 0]

Data: MNIST-1D generated locally by the ``mnist1d`` package (Apache-2.0; ``pip install -e .[examples]``)
from its built-in templates, 8k train / 2k test, 40 features, 10 classes, then shipped as .npz so that
fadiag itself never needs mnist1d. If the .npz files already exist they are reused.
Writes: mnist1d_{train,test}.npz, resmlp_bp.pt (+ .yaml), resmlp_dfa.pt (+ .yaml), resmlp_dfa_init.pt,
resmlp_bp_init.pt, and provenance.json (the numbers PROVENANCE.md reports).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fadiag.models.resmlp import ResMLP
from fadiag.training import (BP_RECIPE, DFA_RECIPE, accuracy, make_feedback, train_bp, train_dfa,
                             train_frozen_baseline)

ARCH = {"in_dim": 40, "width": 64, "depth": 6, "n_classes": 10, "hidden_mult": 1}


def make_data(out: Path, seed: int = 42):
    tr, te = out / "mnist1d_train.npz", out / "mnist1d_test.npz"
    if not (tr.exists() and te.exists()):
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = 10000
        args.seed = seed
        d = make_dataset(args)
        np.savez_compressed(tr, x=d["x"].astype(np.float32), y=d["y"].astype(np.int64))
        np.savez_compressed(te, x=d["x_test"].astype(np.float32), y=d["y_test"].astype(np.int64))
    load = lambda p: (lambda z: (torch.from_numpy(z["x"]), torch.from_numpy(z["y"])))(np.load(p))
    return load(tr), load(te)


def spec_yaml(method: str, frozen_acc: float, extra: str = "") -> str:
    args = ", ".join(f"{k}: {v}" for k, v in ARCH.items())
    return f"""# fadiag spec for resmlp_{method.lower()}.pt (written by fadiag.examples.train_resmlp)
model:
  arch: resmlp
  args: {{{args}}}
checkpoint:
  state_dict: model
data:
  source: npz
  path: mnist1d_test.npz
  train_path: mnist1d_train.npz
  batch_size: 128
  batches: 8
audit:
  method_name: {method}
  notes: "pre-LN ResMLP L=6 d=64 on MNIST-1D; frozen baseline trained by fadiag.training.train_frozen_baseline, seed 0"
  frozen_baseline_acc: {frozen_acc:.4f}
{extra}"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="checkpoints_example")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--feedback-seed", type=int, default=1234)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = make_data(out)
    prov = {"data": {"train": list(xtr.shape), "test": list(xte.shape), "generator": "mnist1d make_dataset, num_samples=10000, seed=42"}}

    t = time.time()
    torch.manual_seed(a.seed)
    base = ResMLP(**ARCH)
    train_frozen_baseline(base, xtr, ytr, BP_RECIPE, seed=a.seed)
    # The spec records the baseline on the audit rows (8 batches of 128: the first 1024 test rows), the
    # rows headline_acc is computed on, so that (d) compares like with like.
    frozen_acc = accuracy(base, xte[:1024], yte[:1024])
    prov["frozen_baseline"] = {"seed": a.seed, "recipe": BP_RECIPE, "audit_rows_acc": frozen_acc,
                               "test_acc": accuracy(base, xte, yte), "wall_s": time.time() - t}

    t = time.time()
    torch.manual_seed(a.seed)
    bp = ResMLP(**ARCH)
    torch.save({"model": bp.state_dict()}, out / "resmlp_bp_init.pt")
    train_bp(bp, xtr, ytr, BP_RECIPE, seed=a.seed)
    prov["bp"] = {"seed": a.seed, "recipe": BP_RECIPE, "test_acc": accuracy(bp, xte, yte), "wall_s": time.time() - t}
    torch.save({"model": bp.state_dict(), "meta": {"method": "BP", "seed": a.seed}}, out / "resmlp_bp.pt")
    (out / "resmlp_bp.yaml").write_text(spec_yaml("BP", frozen_acc, "credit:\n  signal: bp\n  init_checkpoint: resmlp_bp_init.pt\n"))

    t = time.time()
    torch.manual_seed(a.seed)
    dfa = ResMLP(**ARCH)
    fb = make_feedback(ARCH["depth"] + 1, ARCH["n_classes"], ARCH["width"], a.feedback_seed)
    torch.save({"model": dfa.state_dict()}, out / "resmlp_dfa_init.pt")
    train_dfa(dfa, xtr, ytr, fb, DFA_RECIPE, seed=a.seed)
    prov["dfa"] = {"seed": a.seed, "feedback_seed": a.feedback_seed, "recipe": DFA_RECIPE,
                   "test_acc": accuracy(dfa, xte, yte), "wall_s": time.time() - t}
    torch.save({"model": dfa.state_dict(), "feedback": fb, "meta": {"method": "DFA", "seed": a.seed,
                                                                  "feedback_seed": a.feedback_seed}},
               out / "resmlp_dfa.pt")
    (out / "resmlp_dfa.yaml").write_text(spec_yaml(
        "DFA", frozen_acc, "credit:\n  signal: dfa\n  feedback: feedback\n  init_checkpoint: resmlp_dfa_init.pt\n"))
    (out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(json.dumps(prov, indent=2))


if __name__ == "__main__":
    main()
