"""Benchmark fadiag's edge_evidence (docs/science.md §3 item 4) against its peers, as ratios in one run.

    python benchmarks/bench_edges.py [--quick]

(i)  N = 1000 nodes, M = 10000 rows, Gaussian / ReLU + quantised (ties) / 8-level data, at 1 and 2
     intra-op threads: edge_evidence(spearman) vs scipy.stats.spearmanr on the concatenated (M, 2N)
     matrix (what the reference does), and vs two "floors": argsort of both matrices (columns made
     contiguous first) plus one N x N GEMM, with torch.argsort or with numpy's argsort (the cheaper on
     continuous data), i.e. the least work any rank correlation must do, with no tie handling and no
     standardisation. Wall and CPU time (process_time), best of a few repeats, interleaved so that load
     from other processes hits all alike.
(ii) N = 4000, M = 50000: in-memory vs out-of-core (ObservationSpool, max-memory 1 GiB, spool in the
     temp folder) vs the numpy floor, in one run.
(iii) N = 4000, M = 50000, row_chunk = 1024: runs in a fresh subprocess; peak RSS increase during the
     call (VmHWM, reset through /proc/self/clear_refs) relative to the bytes of the two inputs.

Prints markdown tables on stdout; progress on stderr. Results: docs/scale.md.
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
    """{name: (best wall s, best CPU s)}, the runs interleaved."""
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for r in range(max(repeats.values())):
        for k, f in fns.items():
            if r < repeats[k]:
                t0, c0 = time.perf_counter(), time.process_time()
                f()
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    return {k: (min(wall[k]), min(cpu[k])) for k in fns}


def make_data(n: int, m: int, kind: str):
    import torch

    gen = torch.Generator().manual_seed(0)
    A = torch.randn(m, n, generator=gen)
    G = 0.3 * A + torch.randn(m, n, generator=gen)
    if kind == "ties":  # ReLU zeros and quantised values, like real activations
        A = torch.relu(A).mul_(8).round_()
        G = torch.relu(G)
    elif kind == "8-level":
        A = torch.randint(0, 8, (m, n), generator=gen).float()
        G = torch.randint(0, 8, (m, n), generator=gen).float()
    return A, G


def floors(A, G):
    import torch

    def floor_torch():
        torch.argsort(A.T.contiguous(), dim=1)
        torch.argsort(G.T.contiguous(), dim=1)
        return A.T @ G

    def floor_numpy():
        np.argsort(A.T.contiguous().numpy(), axis=1)
        np.argsort(G.T.contiguous().numpy(), axis=1)
        return A.T @ G

    return floor_torch, floor_numpy


def speed(n: int, m: int, kind: str, repeats: int, threads: int) -> dict:
    import scipy.stats
    import torch

    from fadiag.diagnostics.edges import edge_evidence

    torch.set_num_threads(threads)
    A, G = make_data(n, m, kind)
    X = torch.cat([A, G], 1).numpy()
    floor_torch, floor_numpy = floors(A, G)

    def ours():
        return edge_evidence(A, G, method="spearman")

    def scipy_ref():
        return scipy.stats.spearmanr(X).statistic[:n, n:]

    fns = {"ours": ours, "floor_torch": floor_torch, "floor_numpy": floor_numpy}
    reps = {"ours": repeats, "floor_torch": repeats, "floor_numpy": repeats}
    err = None
    if threads == 1:
        W = ours()
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = scipy_ref()
        err = float(np.nanmax(np.abs(W.numpy() - ref)))
        fns["scipy"] = scipy_ref
        reps["scipy"] = max(1, repeats // 2)
    t = best_of(fns, reps)
    return {"n": n, "m": m, "kind": kind, "threads": threads, **t, "max_abs_err_vs_scipy": err}


def out_of_core(n: int, m: int, repeats: int) -> dict:
    import torch

    from fadiag.diagnostics.edges import ObservationSpool, edge_evidence

    torch.set_num_threads(1)
    A, G = make_data(n, m, "gauss")
    _, floor_numpy = floors(A, G)

    def spooled():
        with ObservationSpool(n, max_memory="1GiB") as sp:
            for r0 in range(0, m, 4096):
                sp.append(A[r0:r0 + 4096], G[r0:r0 + 4096])
            return sp.evidence()[0]

    diff = float((spooled() - edge_evidence(A, G)).abs().max())
    t = best_of({"in_memory": lambda: edge_evidence(A, G), "out_of_core": spooled, "floor_numpy": floor_numpy},
                {"in_memory": repeats, "out_of_core": repeats, "floor_numpy": repeats})
    return {"n": n, "m": m, **t, "max_abs_diff": diff}


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
    n1, m1, n2, m2, reps = (200, 2000, 500, 5000, 2) if args.quick else (1000, 10000, 4000, 50000, 3)
    import torch

    rows = []
    for kind in ("gauss", "ties", "8-level"):
        for threads in (1, 2):
            log(f"(i) speed N={n1} M={m1} {kind} threads={threads} ...")
            rows.append(speed(n1, m1, kind, reps, threads))
    log(f"(ii) out of core N={n2} M={m2} ...")
    ooc = out_of_core(n2, m2, 1 if not args.quick else 2)
    log(f"(iii) memory N={n2} M={m2} row_chunk=1024 in a subprocess ...")
    out = subprocess.run([sys.executable, __file__, "--child", str(n2), str(m2), "1024"],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    mem = json.loads(out.stdout.strip().splitlines()[-1])

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, load average {load:.1f}\n")
    print("| data (N x M) | threads | fadiag s wall / CPU | vs scipy (CPU) | vs torch floor (CPU) "
          "| vs numpy floor (CPU) | max abs diff vs scipy |")
    print("|---|---|---|---|---|---|---|")
    names = {"gauss": "Gaussian", "ties": "ReLU + quantised (ties)", "8-level": "8 levels"}
    for r in rows:
        o = r["ours"]
        sc = f"{r['scipy'][1] / o[1]:.1f}x faster" if "scipy" in r else "-"
        e = f"{r['max_abs_err_vs_scipy']:.1e}" if r["max_abs_err_vs_scipy"] is not None else "-"
        print(f"| {names[r['kind']]} ({r['n']} x {r['m']}) | {r['threads']} | {o[0]:.3f} / {o[1]:.3f} | {sc} "
              f"| {o[1] / r['floor_torch'][1]:.2f}x | {o[1] / r['floor_numpy'][1]:.2f}x | {e} |")
    print()
    print("| N x M, 1 thread | in-memory s wall / CPU | out-of-core s wall / CPU | numpy floor s wall / CPU "
          "| out-of-core / in-memory (CPU) | in-memory / floor (CPU) | out-of-core / floor (CPU) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    im, oc, fl = ooc["in_memory"], ooc["out_of_core"], ooc["floor_numpy"]
    print(f"| {ooc['n']} x {ooc['m']} | {im[0]:.1f} / {im[1]:.1f} | {oc[0]:.1f} / {oc[1]:.1f} | {fl[0]:.1f} / {fl[1]:.1f} "
          f"| {oc[1] / im[1]:.2f}x | {im[1] / fl[1]:.2f}x | {oc[1] / fl[1]:.2f}x | {ooc['max_abs_diff']:.1e} |")
    print()
    print("| N x M, row_chunk | time s | inputs MB | peak RSS increase MB | peak / inputs |")
    print("|---|---|---|---|---|")
    note = "" if mem["hwm_reset"] else " (VmHWM not reset: upper bound)"
    print(f"| {mem['n']} x {mem['m']}, {mem['row_chunk']} | {mem['seconds']:.1f} | {mem['input_mb']:.0f} "
          f"| {mem['peak_increase_mb']:.0f} | {mem['ratio']:.2f}{note} |")


if __name__ == "__main__":
    main()
