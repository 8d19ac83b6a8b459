"""Recipe for checkpoints_example/families/: one tiny Hugging Face model per family, trained on CPU in seconds.

    python -m fadiag.examples.train_families --out checkpoints_example/families [--seed 0]

Needs the ``hf`` extra (transformers) and scikit-learn (digits); nothing is downloaded.

- ``vit_digits.pt``: ``ViTForImageClassification`` (2 layers, hidden 32, 2 heads, patch 2) on scikit-learn's
  8x8 digits as (N, 1, 8, 8) images, pixels / 16; 1 297 train / 500 eval rows.
- ``gpt2_count.pt``: ``GPT2LMHeadModel`` (2 layers, n_embd 32, 2 heads, vocab 16) on a synthetic token task:
  each row counts up from a random start by a random step (x_{t+1} = x_t + k mod 16), T = 16, so every
  token after the second is predictable from the two before; ``loss: lm`` on the row itself.

Each checkpoint is ``{"model": state_dict}`` (torch, weights_only) with a sidecar spec naming the class and
its config fields (``transformers:...``): no user code. Writes provenance.json with the training numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml

VIT = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
       "image_size": 8, "patch_size": 2, "num_channels": 1, "num_labels": 10}
GPT2 = {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 16, "n_positions": 16, "bos_token_id": 0,
        "eos_token_id": 0}
RECIPE = {"optimizer": "AdamW", "lr": 3e-3, "weight_decay": 0.01, "batch_size": 64}


def digits(seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = x[perm], d.target.astype(np.int64)[perm]
    return (x[500:], y[500:]), (x[:500], y[:500])


def counting(n: int, seed: int, T: int = 16, V: int = 16):
    g = np.random.default_rng(seed)
    start, step = g.integers(0, V, (n, 1)), g.integers(1, 4, (n, 1))
    return ((start + step * np.arange(T)[None]) % V).astype(np.int64)


def train(model, x, y, loss_fn, epochs: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
    steps = epochs * math.ceil(len(x) / RECIPE["batch_size"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(RECIPE["batch_size"]):
            opt.zero_grad(set_to_none=True)
            loss_fn(model, x[idx], y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def _ce(model, xb, yb):
    return torch.nn.functional.cross_entropy(model(xb).logits, yb)


def _lm(model, xb, yb):
    z = model(xb).logits[:, :-1]
    return torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), yb[:, 1:].reshape(-1))


@torch.no_grad()
def _accuracy(model, x, y, loss):
    """Classification accuracy; for lm, next-token accuracy from t = 2 (the first predictable token)."""
    z = model(x).logits
    if loss == "lm":
        return float((z[:, 1:-1].argmax(-1) == y[:, 2:]).double().mean())
    return float((z.argmax(1) == y).double().mean())


def write(out: Path, name: str, model, arch: str, args: dict, data: str, train: str, loss: str | None, notes: str):
    torch.save({"model": model.state_dict()}, out / f"{name}.pt")
    spec = {"model": {"arch": arch, "args": args}, "checkpoint": {"state_dict": "model"},
            "data": {"source": "npz", "path": data, "train_path": train, "batch_size": 100, "batches": 5},
            "audit": {"method_name": name, "notes": notes}}
    if loss:
        spec["loss"] = loss
    head = f"# fadiag spec for {name}.pt (written by fadiag.examples.train_families)\n"
    (out / f"{name}.yaml").write_text(head + yaml.safe_dump(spec, sort_keys=False))


def frozen_baseline(out: Path, name: str, seed: int) -> float:
    """fadiag's own --frozen-baseline train on the shipped spec, then stored in the spec (audit.frozen_baseline_acc)."""
    from fadiag import api, subject

    acc, _ = api.frozen_baseline(subject.load(str(out / f"{name}.pt")), seed=seed)
    p = out / f"{name}.yaml"
    head, _, body = p.read_text().partition("\n")
    spec = yaml.safe_load(body)
    spec["audit"]["frozen_baseline_acc"] = round(acc, 4)
    p.write_text(head + "\n" + yaml.safe_dump(spec, sort_keys=False))
    return acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="checkpoints_example/families")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import transformers

    torch.set_num_threads(1)
    prov = {"torch": torch.__version__, "transformers": transformers.__version__, "recipe": RECIPE, "seed": a.seed}
    (xtr, ytr), (xte, yte) = digits(a.seed)
    tr, te = counting(4000, a.seed + 1), counting(500, a.seed + 2)
    jobs = (("vit_digits", "ViTForImageClassification", "ViTConfig", VIT, (xtr, ytr, xte, yte), "digits_img", _ce, 30,
             None, "HF ViT, 2 layers, d=32, on 8x8 digits; BP, 30 epochs"),
            ("gpt2_count", "GPT2LMHeadModel", "GPT2Config", GPT2, (tr, tr, te, te), "count", _lm, 4, "lm",
             "HF GPT-2, 2 layers, d=32, on a synthetic counting task; BP, 4 epochs"))
    for name, cls, cfg, args, (x1, y1, x2, y2), stem, loss_fn, epochs, loss, notes in jobs:
        np.savez_compressed(out / f"{stem}_train.npz", x=x1, y=y1)
        np.savez_compressed(out / f"{stem}_test.npz", x=x2, y=y2)
        torch.manual_seed(a.seed)
        model = getattr(transformers, cls)(getattr(transformers, cfg)(**args))
        t0 = time.time()
        train(model, torch.from_numpy(x1), torch.from_numpy(y1), loss_fn, epochs, a.seed)
        prov[name] = {"epochs": epochs, "wall_s": round(time.time() - t0, 1), "config": args,
                      "eval_acc": _accuracy(model, torch.from_numpy(x2), torch.from_numpy(y2), loss)}
        write(out, name, model, f"transformers:{cls}", args, f"{stem}_test.npz", f"{stem}_train.npz", loss, notes)
    for name in ("vit_digits", "gpt2_count"):
        prov[name]["frozen_baseline_acc"] = frozen_baseline(out, name, a.seed)
    (out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(json.dumps(prov, indent=2))


if __name__ == "__main__":
    main()
