"""Benchmark fadiag's edge_evidence (SCIENCE.md §3 item 4) against its peers, as ratios in one run.

    python benchmarks/bench_edges.py [--quick]

(i)  N = 1000 nodes, M = 10000 rows: edge_evidence(spearman) vs scipy.stats.spearmanr on the
     concatenated (M, 2N) matrix (what the reference does), and vs the "floor": argsort of both
     matrices (columns made contiguous first, the faster layout) plus one N x N GEMM, i.e. the
     least work any rank correlation must do, with no tie handling and no standardisation.
     Best of a few repeats, interleaved so that load from other processes hits all three alike.
(ii) N = 4000, M = 50000, row_chunk = 1024: runs in a fresh subprocess; peak RSS increase during the
     call (VmHWM, reset through /proc/self/clear_refs) relative to the bytes of the two inputs.

Targets (from the issue): >= 4x faster than scipy, within 1.2x of the floor, peak <= 3x the inputs.
Prints a markdown table on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def best_of(fns: dict, repeats: dict) -> dict:
    times = {k: [] for k in fns}
    for r in range(max(repeats.values())):
        for k, f in fns.items():
            if r < repeats[k]:
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def speed(n: int, m: int, ties: bool, repeats: int) -> dict:
    import scipy.stats
    import torch

    from fadiag.diagnostics.edges import edge_evidence

    gen = torch.Generator().manual_seed(0)
    A = torch.randn(m, n, generator=gen)
    G = 0.3 * A + torch.randn(m, n, generator=gen)
    if ties:  # ReLU zeros and quantised values, like real activations
        A = torch.relu(A).mul_(8).round_()
        G = torch.relu(G)
    X = torch.cat([A, G], 1).numpy()

    def floor():
        torch.argsort(A.T.contiguous(), dim=1)
        torch.argsort(G.T.contiguous(), dim=1)
        return A.T @ G

    def ours():
        return edge_evidence(A, G, method="spearman")

    def scipy_ref():
        return scipy.stats.spearmanr(X).statistic[:n, n:]

    W = ours()
    ref = scipy_ref()
    err = float(np.nanmax(np.abs(W.numpy() - ref)))
    t = best_of({"ours": ours, "floor": floor, "scipy": scipy_ref},
                {"ours": repeats, "floor": repeats, "scipy": max(1, repeats // 2)})
    return {"n": n, "m": m, "ties": ties, **t, "max_abs_err_vs_scipy": err}


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(key)


def memory_child(n: int, m: int, row_chunk: int) -> None:
    """Runs in a fresh process; prints one JSON line."""
    import torch

    from fadiag.diagnostics.edges import edge_evidence

    gen = torch.Generator().manual_seed(0)
    A = torch.randn(m, n, generator=gen)
    G = torch.randn(m, n, generator=gen)
    G.mul_(0.8).add_(A, alpha=0.2)
    input_bytes = A.numel() * 4 + G.numel() * 4
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    base = _status_kb("VmRSS")
    hwm0 = _status_kb("VmHWM")
    t0 = time.perf_counter()
    W = edge_evidence(A, G, method="spearman", row_chunk=row_chunk)
    wall = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    print(json.dumps({
        "n": n, "m": m, "row_chunk": row_chunk, "seconds": wall,
        "input_mb": input_bytes / 2**20, "peak_increase_mb": (peak - base) / 1024,
        "ratio": (peak - base) * 1024 / input_bytes, "hwm_reset": reset or hwm0 <= base + 1024,
        "w_mean_diag": float(W.diagonal().mean()),
    }))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        memory_child(*args.child)
        return
    n1, m1, n2, m2, reps = (200, 2000, 500, 5000, 2) if args.quick else (1000, 10000, 4000, 50000, 5)
    import torch

    rows = []
    for ties in (False, True):
        log(f"(i) speed N={n1} M={m1} ties={ties} ...")
        rows.append(speed(n1, m1, ties, reps))
    log(f"(ii) memory N={n2} M={m2} row_chunk=1024 in a subprocess ...")
    out = subprocess.run([sys.executable, __file__, "--child", str(n2), str(m2), "1024"],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    mem = json.loads(out.stdout.strip().splitlines()[-1])

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs\n")
    print("| data (N x M) | fadiag s | floor s | scipy s | vs scipy | vs floor | max abs diff vs scipy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        kind = "ReLU + quantised (ties)" if r["ties"] else "Gaussian"
        print(f"| {kind} ({r['n']} x {r['m']}) | {r['ours']:.3f} | {r['floor']:.3f} | {r['scipy']:.3f} "
              f"| {r['scipy'] / r['ours']:.1f}x faster | {r['ours'] / r['floor']:.2f}x | "
              f"{r['max_abs_err_vs_scipy']:.1e} |")
    print()
    print("| N x M, row_chunk | time s | inputs MB | peak RSS increase MB | peak / inputs |")
    print("|---|---|---|---|---|")
    note = "" if mem["hwm_reset"] else " (VmHWM not reset: upper bound)"
    print(f"| {mem['n']} x {mem['m']}, {mem['row_chunk']} | {mem['seconds']:.1f} | {mem['input_mb']:.0f} "
          f"| {mem['peak_increase_mb']:.0f} | {mem['ratio']:.2f}{note} |")
    print()
    ok = [min(r["scipy"] / r["ours"] for r in rows) >= 4, max(r["ours"] / r["floor"] for r in rows) <= 1.2,
          mem["ratio"] <= 3]
    print("Targets: >= 4x scipy: {}; <= 1.2x floor: {}; peak <= 3x inputs: {}".format(
        *("met" if o else "NOT met" for o in ok)))


if __name__ == "__main__":
    main()
