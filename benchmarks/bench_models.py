"""fadiag audit of real-size models against the bare floor, in one run (docs/scale.md, "Real-size models").

    python benchmarks/bench_models.py [--size full|small] [--models gpt2,vit] [--repeat 1]
    python benchmarks/bench_models.py crossover          # 1 thread vs every core, MLP passes of growing size

Models (random init, seeded; nothing downloaded):

  gpt2  GPT-2 small: 12 x 768, 12 heads, vocab 50 257, written with ``save_pretrained`` to a temporary folder;
        eval data 8 batches of 8 x 128 random token ids (``loss: lm``)
  vit   timm ``vit_base_patch16_224`` (ViT-B/16, 86 M parameters, 1000 classes), its state dict in a .pt and a
        spec naming ``timm:vit_base_patch16_224``; 8 batches of 8 random 3 x 224 x 224 images

``--size small`` shrinks both (GPT-2 4 x 256, vocab 8000, 4 x 64 tokens; ViT depth 2, width 192, 64 x 64
images; 4 batches) to check that the script works; ``--size vocab`` keeps GPT-2's vocabulary and 8 x 128 tokens
on a 2 x 256 body (3 batches), where the loss over the (8, 128, 50 257) logits is most of the work.

Two whole processes per model, each timed from its start (interpreter, imports, loading included):

  fadiag  ``python -m fadiag audit CKPT --data D --batches NB --batch-size B -f json`` with default settings
          (its thread count is its own choice: the report's runtime.threads)
  floor   the model's own library loading the same weights and data, then NB forward+backward passes with
          the gradient of the mean loss with respect to every hidden state (transformers:
          ``model(ids, labels=ids, output_hidden_states=True)``; timm: h_0 and every block's output by
          forward hooks, cross-entropy of the logits), at the thread count fadiag chose

Measured per process with os.wait4: wall seconds, CPU seconds (user + system) and peak RSS (ru_maxrss).
Printed as a table of fadiag / floor ratios. Targets (issue 25): wall <= 1.15x and peak RSS <= 1.15x the
floor, runtime.threads == the cores the process may use. Needs transformers and timm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZES = {
    "full": {"gpt2": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024, seq=128),
             "vit": dict(args={}, img=224), "batch": 8, "batches": 8},
    "small": {"gpt2": dict(n_layer=4, n_embd=256, n_head=4, vocab_size=8000, n_positions=128, seq=64),
              "vit": dict(args={"depth": 2, "embed_dim": 192, "num_heads": 3, "img_size": 64}, img=64),
              "batch": 4, "batches": 4},
    "vocab": {"gpt2": dict(n_layer=2, n_embd=256, n_head=4, vocab_size=50257, n_positions=128, seq=128),
              "vit": dict(args={"depth": 2, "embed_dim": 192, "num_heads": 3, "img_size": 64}, img=64),
              "batch": 8, "batches": 3},
}


# ----------------------------------------------------------------------------------------- inputs

def make_gpt2(folder: Path, size: dict, batch: int, batches: int) -> tuple:
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = {k: v for k, v in size["gpt2"].items() if k != "seq"}
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(**cfg, bos_token_id=0, eos_token_id=0)).save_pretrained(folder / "gpt2")
    g = np.random.default_rng(0)
    x = g.integers(0, cfg["vocab_size"], (batch * batches, size["gpt2"]["seq"]), dtype=np.int64)
    np.savez(folder / "gpt2.npz", x=x, y=x)
    return folder / "gpt2", folder / "gpt2.npz", []


def make_vit(folder: Path, size: dict, batch: int, batches: int) -> tuple:
    import numpy as np
    import timm
    import torch
    import yaml

    args = dict(size["vit"]["args"])
    torch.manual_seed(0)
    m = timm.create_model("vit_base_patch16_224", pretrained=False, **args)
    torch.save({"model": m.state_dict()}, folder / "vit.pt")
    g = np.random.default_rng(0)
    img = size["vit"]["img"]
    x = g.standard_normal((batch * batches, 3, img, img), dtype=np.float32)
    y = g.integers(0, 1000, batch * batches, dtype=np.int64)
    np.savez(folder / "vit.npz", x=x, y=y)
    spec = {"model": {"arch": "timm:vit_base_patch16_224", "args": args},
            "data": {"source": "npz", "path": "vit.npz", "batch_size": batch, "batches": batches}}
    (folder / "vit.yaml").write_text(yaml.safe_dump(spec))
    return folder / "vit.pt", folder / "vit.npz", ["--spec", str(folder / "vit.yaml")]


# ------------------------------------------------------------------------------------------ floor

def floor(kind: str, ckpt: str, data: str, batch: int, batches: int, threads: int, args: str) -> None:
    """The bare floor, in its own process (``bench_models.py _floor ...``)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    d = np.load(data)
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    if kind == "gpt2":
        from transformers import GPT2LMHeadModel

        model = GPT2LMHeadModel.from_pretrained(ckpt).eval()

        def step(xb, yb):
            out = model(input_ids=xb, labels=yb, output_hidden_states=True)
            return torch.autograd.grad(out.loss, out.hidden_states)
    else:
        import timm

        model = timm.create_model("vit_base_patch16_224", pretrained=False, **json.loads(args)).eval()
        model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
        hs: list = []
        model.blocks[0].register_forward_pre_hook(lambda m, a: hs.append(a[0]))
        for blk in model.blocks:
            blk.register_forward_hook(lambda m, a, o: hs.append(o))

        def step(xb, yb):
            hs.clear()
            xb = xb.requires_grad_(True)  # every h_l in the graph, as fadiag does for float inputs
            return torch.autograd.grad(F.cross_entropy(model(xb), yb), hs)
    with torch.enable_grad():
        for i in range(batches):
            step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])


# ------------------------------------------------------------------------------------------ timing

def timed(cmd: list, env: dict) -> dict:
    """Run ``cmd``: wall s, CPU s (user + system) and peak RSS (bytes) of that process, and its stdout."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in (0, 1):
        raise SystemExit(f"{cmd[:4]} failed ({p.returncode}): {err.decode()[-800:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss": ru.ru_maxrss * 1024, "out": out}


def bench_model(kind: str, folder: Path, size: dict, repeat: int) -> dict:
    b, nb = size["batch"], size["batches"]
    ckpt, data, extra = (make_gpt2 if kind == "gpt2" else make_vit)(folder, size, b, nb)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("OMP_NUM_THREADS", None)  # fadiag's default
    fad_cmd = [sys.executable, "-m", "fadiag", "audit", str(ckpt), *extra, "--data", str(data), "--batches", str(nb),
               "--batch-size", str(b), "-f", "json", "-q"]
    best: dict = {}
    threads = None
    for _ in range(repeat):
        f = timed(fad_cmd, env)
        threads = json.loads(f.pop("out"))["runtime"]["threads"]
        fl = timed([sys.executable, __file__, "_floor", kind, str(ckpt), str(data), str(b), str(nb), str(threads),
                    json.dumps(size["vit"]["args"])], dict(env, OMP_NUM_THREADS=str(threads)))
        fl.pop("out")
        for name, r in (("fadiag", f), ("floor", fl)):
            old = best.get(name)
            best[name] = r if old is None else {k: min(old[k], r[k]) for k in r}
    return {"threads": threads, **best}


def crossover() -> None:
    """1 thread vs every core on MLP forward+backward passes of growing multiply-adds (the threads default)."""
    import torch

    from fadiag.run.sweep import LARGE_MODEL_MACS, cpu_count

    cores = cpu_count()
    print(f"cores {cores}; fadiag uses every core from {LARGE_MODEL_MACS:.2e} multiply-adds a batch")
    print("| multiply-adds / batch | 1 thread ms | all cores ms | speed-up |\n|---|---|---|---|")
    for w, rows in ((64, 64), (256, 64), (256, 256), (512, 256), (1024, 256), (1024, 1024), (2048, 1024)):
        m = torch.nn.Sequential(*[torch.nn.Linear(w, w) for _ in range(4)])
        x = torch.randn(rows, w, requires_grad=True)
        t = {}
        for n in (1, cores):
            torch.set_num_threads(n)
            runs = []
            for _ in range(5):
                s = time.perf_counter()
                torch.autograd.grad(m(x).square().mean(), x)
                runs.append(time.perf_counter() - s)
            t[n] = min(runs)
        print(f"| {4 * w * w * rows:.2e} | {t[1] * 1e3:.2f} | {t[cores] * 1e3:.2f} | {t[1] / t[cores]:.2f}x |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_floor":
        k, ck, d, b, nb, th, args = sys.argv[2:9]
        return floor(k, ck, d, int(b), int(nb), int(th), args)
    if len(sys.argv) > 1 and sys.argv[1] == "crossover":
        return crossover()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--models", default="gpt2,vit")
    ap.add_argument("--repeat", type=int, default=1, help="best of N (each a pair of whole processes)")
    a = ap.parse_args()
    size = SIZES[a.size]
    from fadiag.run.sweep import cpu_count

    print(f"{platform.platform()}, python {platform.python_version()}, cores {cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f} at the start; size {a.size}, {size['batches']} batches of "
          f"{size['batch']}")
    print("| model | threads | fadiag wall s | floor wall s | wall | CPU | peak RSS (fadiag / floor GiB) |")
    print("|---|---|---|---|---|---|---|")
    for kind in a.models.split(","):
        with tempfile.TemporaryDirectory(prefix="fadiag-bench-") as tmp:
            r = bench_model(kind, Path(tmp), size, a.repeat)
        f, fl = r["fadiag"], r["floor"]
        print(f"| {kind} | {r['threads']} | {f['wall']:.1f} | {fl['wall']:.1f} | {f['wall'] / fl['wall']:.2f}x | "
              f"{f['cpu'] / fl['cpu']:.2f}x | {f['rss'] / fl['rss']:.2f}x ({f['rss'] / 2**30:.2f} / "
              f"{fl['rss'] / 2**30:.2f}) |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
