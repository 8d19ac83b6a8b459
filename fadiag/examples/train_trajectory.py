"""Recipe for a run ``fadiag trajectory`` reads: the shipped DFA recipe (fadiag.training.DFA_RECIPE, the one that
trained checkpoints_example/resmlp_dfa.pt) saving a checkpoint every K optimiser steps (docs/trajectory.md).

    python -m fadiag.examples.train_trajectory --out runs/dfa --every 125 [--epochs 30] [--monitor]

Data: checkpoints_example/mnist1d_{train,test}.npz (shipped). Writes OUT/step_NNNNNN.pt ({"model", "feedback",
"step"}), OUT/run.yaml (the spec for the whole run: ``fadiag trajectory OUT --spec OUT/run.yaml``) and, with
``--monitor``, OUT/monitor.jsonl from a fadiag.callbacks.Monitor auditing the live model at the same steps.
Step 0 (the initialisation) is saved too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fadiag.examples.train_resmlp import ARCH, spec_yaml
from fadiag.models.resmlp import ResMLP
from fadiag.training import DFA_RECIPE, make_feedback, train_dfa

DATA = Path(__file__).resolve().parents[2] / "checkpoints_example"


def run_spec(data_dir: Path) -> str:
    """The run's spec: the DFA example's (same model, same 8 eval batches of 128 test rows, same baseline)."""
    text = spec_yaml("DFA", 0.5020).replace("mnist1d_test.npz", str(data_dir / "mnist1d_test.npz"))
    return text.replace("mnist1d_train.npz", str(data_dir / "mnist1d_train.npz"))


def load(p: Path):
    import numpy as np

    z = np.load(p)
    return torch.from_numpy(z["x"]), torch.from_numpy(z["y"])


def train_run(out: Path, every: int, epochs: int = 30, seed: int = 0, feedback_seed: int = 1234,
              monitor: bool = False, data_dir: Path = DATA) -> dict:
    """Train and save; returns {"steps": [...], "spec": path}."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.yaml").write_text(run_spec(data_dir))
    xtr, ytr = load(data_dir / "mnist1d_train.npz")
    torch.manual_seed(seed)
    model = ResMLP(**ARCH)
    fb = make_feedback(ARCH["depth"] + 1, ARCH["n_classes"], ARCH["width"], feedback_seed)
    mon = None
    if monitor:
        from fadiag.callbacks import Monitor

        log = out / "monitor.jsonl"
        log.unlink(missing_ok=True)
        mon = Monitor(str(out / "run.yaml"), every=every, log=log)
    steps = []

    def on_step(m, step):
        if step % every == 0:
            torch.save({"model": m.state_dict(), "feedback": fb, "step": step}, out / f"step_{step:06d}.pt")
            steps.append(step)
        if mon is not None:
            mon.step(m, step)

    on_step(model, 0)
    train_dfa(model, xtr, ytr, fb, dict(DFA_RECIPE, epochs=epochs), seed=seed, on_step=on_step)
    return {"steps": steps, "spec": str(out / "run.yaml")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/dfa")
    ap.add_argument("--every", type=int, default=125, help="save every K optimiser steps (125 = one epoch)")
    ap.add_argument("--epochs", type=int, default=DFA_RECIPE["epochs"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--monitor", action="store_true", help="also audit the live model at the same steps")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    r = train_run(Path(a.out), a.every, a.epochs, a.seed, monitor=a.monitor)
    print(f"saved {len(r['steps'])} checkpoints, steps {r['steps'][0]}..{r['steps'][-1]}, spec {r['spec']}")


if __name__ == "__main__":
    main()
