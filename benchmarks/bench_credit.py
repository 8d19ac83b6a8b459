"""Benchmark: batched perturbation correlation vs the sequential (reference-style) loop, same run.

Model: a pre-LN residual MLP like fadiag's example (in_dim 40, width 64, 6 blocks of
LayerNorm -> Linear(64, 256) -> GELU -> Linear(256, 64) added to the stream, out LayerNorm + head to
10 classes), torch default init, seed 0, batch 128, eval mode. Metric at the middle layer (l = 3),
M = 32 directions, eps = 1e-3. Reports best-of-N wall and CPU time of each and their ratio, and checks
that both give the same ρ.

By default it times what ``fadiag credit`` runs: a float64 copy of the model, 1 intra-op thread (the
CLI's choice for small models, docs/scale.md). ``--cli CKPT`` times the whole credit_api.credit call
on a checkpoint, as the command runs it.

    python benchmarks/bench_credit.py [--repeats 15] [--threads 1] [--dtype float64] [--layer 3] [--dirs 32]
    python benchmarks/bench_credit.py --cli checkpoints_example/resmlp_bp.pt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

try:
    from fadiag.diagnostics.credit import perturbation_correlation, perturbation_correlation_sequential
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fadiag.diagnostics.credit import perturbation_correlation, perturbation_correlation_sequential


class ResMLP(nn.Module):
    def __init__(self, in_dim=40, width=64, depth=6, n_classes=10):
        super().__init__()
        self.embed = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(),
                          nn.Linear(4 * width, width))
            for _ in range(depth)
        )
        self.out_ln = nn.LayerNorm(width)
        self.out_head = nn.Linear(width, n_classes)

    def hidden(self, x, l):
        h = self.embed(x)
        for blk in self.blocks[:l]:
            h = h + blk(h)
        return h

    def forward_from(self, l, h):
        for blk in self.blocks[l:]:
            h = h + blk(h)
        return self.out_head(self.out_ln(h))


def best_times(fns, repeats):
    """Best-of-``repeats`` wall and CPU time of each function, the runs interleaved (a, b, a, b, ...) so
    that load from other processes hits both alike: ([wall], [cpu])."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    cpu = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
            cpu[i] = min(cpu[i], time.process_time() - c0)
    return best, cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="float64: what the CLI computes in (a float64 copy of the model)")
    p.add_argument("--cli", default=None, help="time credit_api.credit on this checkpoint, as `fadiag credit` runs it")
    p.add_argument("--layer", type=int, default=3)
    p.add_argument("--dirs", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--example", default=None,
                   help="use a shipped checkpoint's model and eval data, e.g. checkpoints_example/resmlp_bp.pt")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.cli:
        return cli_timing(args)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    if args.example:
        import fadiag

        subj = fadiag.load(args.example, batches=1, batch_size=args.batch)
        m = subj.model

        class _Wrap:
            def hidden(self, x, l):
                return m(x, return_hidden=True)[1][l]

            def forward_from(self, l, h):
                return m.forward_from(h, l)

        model = _Wrap()
        x, y = subj.batches[0]
    else:
        model = ResMLP().eval()
        x = torch.randn(args.batch, 40, generator=gen)
        y = torch.randint(0, 10, (args.batch,), generator=gen)
        if args.dtype == "float64":
            model, x = model.double(), x.double()
    l = args.layer

    with torch.no_grad():
        h = model.hidden(x, l)
    hg = h.clone().requires_grad_(True)
    loss = F.cross_entropy(model.forward_from(l, hg), y, reduction="none").sum()
    (g,) = torch.autograd.grad(loss, hg)

    def forward_fn(hh):
        reps = hh.shape[0] // y.shape[0]
        return F.cross_entropy(model.forward_from(l, hh), y.repeat(reps), reduction="none")

    def batched():
        return perturbation_correlation(h, g, forward_fn, n_dirs=args.dirs,
                                        generator=torch.Generator().manual_seed(1))

    def sequential():
        return perturbation_correlation_sequential(h, g, forward_fn, n_dirs=args.dirs,
                                                   generator=torch.Generator().manual_seed(1))

    rho_b, rho_s = batched(), sequential()
    (t_seq, t_bat), (c_seq, c_bat) = best_times([sequential, batched], args.repeats)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.dtype}, batch {args.batch}, "
          f"layer {l}, M {args.dirs}, best of {args.repeats}")
    print(f"rho batched {rho_b:.6f}  sequential {rho_s:.6f}  |diff| {abs(rho_b - rho_s):.1e}")
    print(f"sequential {t_seq * 1e3:8.2f} ms wall {c_seq * 1e3:8.2f} ms CPU")
    print(f"batched    {t_bat * 1e3:8.2f} ms wall {c_bat * 1e3:8.2f} ms CPU")
    print(f"speed-up   {t_seq / t_bat:8.2f}x wall {c_seq / c_bat:8.2f}x CPU")


def cli_timing(args):
    """The whole per-checkpoint credit computation of `fadiag credit CKPT` (loading excluded)."""
    import fadiag
    from fadiag.families.credit.api import credit

    subj = fadiag.load(args.cli, batches=1, batch_size=args.batch)
    (wall,), (cpu,) = best_times([lambda: credit(subj, n_dirs=args.dirs)], args.repeats)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.cli}, batch {args.batch}, "
          f"M {args.dirs}, best of {args.repeats}")
    print(f"credit_api.credit {wall * 1e3:8.1f} ms wall {cpu * 1e3:8.1f} ms CPU")


if __name__ == "__main__":
    main()
