"""Scale benchmarks (docs/scale.md), each printing ratios measured in one run.

    python benchmarks/bench_scale.py threads            # audit at 1 vs 2 intra-op threads (warm, in-process)
    python benchmarks/bench_scale.py big [--n 10000 --m 300000 --ties --spool DIR --max-memory 4GiB]
    python benchmarks/bench_scale.py sweep [--count 20]  # --jobs 1 vs --jobs 2 (fork server preloaded or
                                                         # not) vs a Dask LocalCluster

big: synthetic observations (A Gaussian, G = 0.3 A[:, perm] + noise; --ties: ReLU zeros and 8-level
A) are written batch by batch to an ObservationSpool and W is computed out of core. It prints the time,
the peak RSS of the process (VmHWM), the spool bytes, and the time as a multiple of the floor measured on
the same spool in the same run: numpy argsort of every column of both matrices plus the N x N GEMM over
all M rows. At this size the floor's GEMM alone would take as long as the run, so the floor is measured
on a part and scaled linearly (argsort: 2 column blocks; GEMM: 1/10 of the rows), which is said in the
output. First the W of a 2 000 x 20 000 subset is compared with the in-memory path.

sweep: the shipped ResMLP checkpoints repeated to --count paths; whole `fadiag audit` commands timed
(wall clock, import and worker start-up included), and the Dask run against an already started
2-worker LocalCluster on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def vm(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def machine() -> str:
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return (f"{os.cpu_count()} CPUs ({model}), {mem / 2**30:.0f} GiB RAM, torch {torch.__version__}, "
            f"numpy {np.__version__}, load average {load[0]:.1f}")


# -------------------------------------------------------------------------------------------- threads

def bench_threads(args) -> None:
    import torch

    import fadiag
    from fadiag.families.audit.api import audit

    subj = fadiag.load(str(REPO / "checkpoints_example" / "resmlp_bp.pt"))
    res = {}
    for rep in range(args.repeats):
        for t in (1, 2):
            torch.set_num_threads(t)
            w0, c0 = time.perf_counter(), time.process_time()
            audit(subj)
            w, c = time.perf_counter() - w0, time.process_time() - c0
            best = res.get(t, (1e9, 1e9))
            res[t] = (min(best[0], w), min(best[1], c))
    print(machine())
    print("| audit of resmlp_bp.pt (warm, in-process) | wall s | CPU s |")
    print("|---|---|---|")
    for t, (w, c) in res.items():
        print(f"| {t} thread{'s' if t > 1 else ''} | {w:.3f} | {c:.3f} |")
    print(f"\n2 threads / 1 thread: wall {res[2][0] / res[1][0]:.2f}x, CPU {res[2][1] / res[1][1]:.2f}x")


# ------------------------------------------------------------------------------------------------ big

def synth_batches(n: int, m: int, ties: bool, rows: int = 8192, seed: int = 0):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    for r0 in range(0, m, rows):
        b = min(rows, m - r0)
        a = rng.standard_normal((b, n), dtype=np.float32)
        g = 0.3 * a[:, perm] + rng.standard_normal((b, n), dtype=np.float32)
        if ties:
            a = np.clip(np.round(a * 2), 0, 7)  # ReLU-like zeros, 8 levels
            g = np.maximum(g, 0)
        yield a.astype(np.float32), g.astype(np.float32)


def subset_check(ties: bool, spool: str | None) -> float:
    import torch

    from fadiag.diagnostics.edges import ObservationSpool, edge_evidence

    parts = list(synth_batches(2000, 20000, ties, rows=4096, seed=1))
    A = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    G = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    W0 = edge_evidence(A, G)
    with ObservationSpool(2000, folder=spool, max_memory="256MiB") as sp:
        for a, g in parts:
            sp.append(a, g)
        W, _ = sp.evidence()
    return float((W - W0).abs().max())


def bench_big(args) -> None:
    import torch

    from fadiag.diagnostics import edges as E
    from fadiag.diagnostics.edges import out_of_core as OOC, ranks
    from fadiag.run.sweep import choose_threads, set_threads

    threads = set_threads(choose_threads(args.threads, entries=args.n * args.m))
    print(machine())
    print(f"threads {threads}; N = {args.n}, M = {args.m}, {'tie-heavy' if args.ties else 'continuous'}; "
          f"spool in {args.spool or tempfile.gettempdir()}, max-memory {args.max_memory}")
    diff = subset_check(args.ties, args.spool) if args.subset else None
    if diff is not None:
        print(f"W out of core vs in memory on a 2000 x 20000 subset: max |diff| = {diff:.2e}", flush=True)
    try:  # the subset's in-memory run is not part of the big case's peak: reset VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        log("VmHWM not reset: the peak below includes the subset check")
    t_start = time.perf_counter()

    def progress(phase, done, total):
        log(f"[{time.perf_counter() - t_start:7.0f} s] {phase} {done}/{total}  VmHWM {vm('VmHWM') / 2**30:.2f} GiB")
    t0 = time.perf_counter()
    sp = E.ObservationSpool(args.n, folder=args.spool, max_memory=args.max_memory)
    try:
        for i, (a, g) in enumerate(synth_batches(args.n, args.m, args.ties)):
            sp.append(a, g)
            if i % 8 == 0:
                progress("spool", sp.m, args.m)
        t_write = time.perf_counter() - t0
        log(f"spooled {sp.spool_bytes / 2**30:.1f} GiB in {t_write:.0f} s")
        plan = sp.plan()
        maps = sp._maps()
        # floor, measured on this spool before it is ranked: argsort of 2 column blocks, GEMM over M/10 rows
        k = plan["col_block"]
        if not args.floor:
            t_sort = c_sort = t_gemm = c_gemm = float("nan")
        f0 = time.perf_counter()
        c0 = time.process_time()
        for c in (0, min(k, args.n - k)) if args.floor else ():
            blk = np.ascontiguousarray(maps["acts"][:, c:c + k].T)
            OOC._drop_pages(maps["acts"], 0, sp.spool_bytes // 2)  # mapped pages are not part of the floor's RSS
            idx = np.empty(blk.shape, dtype=np.int64)
            ranks._argsort_rows(blk, idx)
            del blk, idx
        if args.floor:
            t_sort = (time.perf_counter() - f0) / 2 * (2 * -(-args.n // k))
            c_sort = (time.process_time() - c0) / 2 * (2 * -(-args.n // k))
        rows = max(1, args.m // 10) if args.floor else 0
        W = torch.zeros(args.n, args.n)
        f0 = time.perf_counter()
        c0 = time.process_time()
        step = plan["gemm_rows"]
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            W.addmm_(torch.from_numpy(np.asarray(maps["acts"][r0:r1])).T, torch.from_numpy(np.asarray(maps["grads"][r0:r1])))
            for mm in maps.values():
                OOC._drop_pages(mm, r0 * args.n * 4, r1 * args.n * 4)
        if args.floor:
            t_gemm = (time.perf_counter() - f0) * args.m / rows
            c_gemm = (time.process_time() - c0) * args.m / rows
        del W
        floor, cfloor = t_sort + t_gemm, c_sort + c_gemm
        log(f"floor (scaled): argsort {t_sort:.0f} s + GEMM {t_gemm:.0f} s")
        try:  # the peak below is fadiag's: reset VmHWM after the floor (and the data generator)
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            log("VmHWM not reset: the peak below includes the floor and the data generator")
        t1 = time.perf_counter()
        c1 = time.process_time()
        Wt, info = sp.evidence("spearman", progress=progress)
        t_ev, c_ev = time.perf_counter() - t1, time.process_time() - c1
        peak = vm("VmHWM")
        out = {"n": args.n, "m": args.m, "ties": args.ties, "threads": threads, "spool_write_s": t_write,
               "evidence_s": t_ev, "evidence_cpu_s": c_ev, "floor_s": floor, "floor_cpu_s": cfloor,
               "floor_sort_s": t_sort, "floor_gemm_s": t_gemm, "ratio_wall": t_ev / floor, "ratio_cpu": c_ev / cfloor,
               "peak_rss_bytes": peak, "spool_bytes": sp.spool_bytes, "subset_max_abs_diff": diff, **info,
               "w_diag_mean": float(Wt.diagonal().mean())}
    finally:
        sp.close()
    print(f"evidence {t_ev:.0f} s wall ({c_ev:.0f} s CPU) = {out['ratio_wall']:.2f}x the floor wall, "
          f"{out['ratio_cpu']:.2f}x its CPU (floor scaled from 2 column blocks and M/10 rows: {floor:.0f} s)")
    print(f"peak RSS {peak / 2**30:.2f} GiB; spool {sp.spool_bytes / 2**30:.1f} GiB; col_block {info['col_block']}, "
          f"GEMM rows {info['gemm_rows']}; spool write {t_write:.0f} s")
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------------- sweep

#: ``python -m fadiag`` with the --jobs workers' fork server importing nothing first (as before issue 25)
NO_PRELOAD = ["-c", "import fadiag.run.sweep as s; s.WORKER_PRELOAD = (); from fadiag.cli import main; main()"]


def _fadiag(argv, env=None, entry=("-m", "fadiag")) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, *entry, *argv], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, **(env or {})))
    if res.returncode not in (0, 1):
        raise RuntimeError(res.stderr)
    return time.perf_counter() - t0, res.stdout


def bench_sweep(args) -> None:
    ckpts = sorted(str(p) for p in (REPO / "checkpoints_example").glob("resmlp_*.pt"))
    paths = (ckpts * (args.count // len(ckpts) + 1))[: args.count]
    base = ["audit", *paths, "-f", "jsonl", "-q", *(["--frozen-baseline", "train"] if args.full_protocol else [])]
    times = {}
    outs = {}
    for rep in range(args.repeats):
        for name, extra, entry in (("--jobs 1", [], ("-m", "fadiag")), ("--jobs 2", ["--jobs", "2"], ("-m", "fadiag")),
                                   ("--jobs 2, no preload", ["--jobs", "2"], NO_PRELOAD)):
            t, out = _fadiag(base + extra, entry=entry)
            times[name] = min(times.get(name, 1e9), t)
            outs[name] = out
    same = outs["--jobs 1"] == outs["--jobs 2"] == outs["--jobs 2, no preload"]
    dask_t = None
    try:
        from distributed import LocalCluster

        t0 = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            start = time.perf_counter() - t0
            for rep in range(args.repeats):
                t, out = _fadiag(base, env={"FADIAG_SCHEDULER": cluster.scheduler_address})
                dask_t = min(dask_t or 1e9, t)
            same_dask = out == outs["--jobs 1"]
    except ImportError:
        start = same_dask = None
    print(machine())
    what = "the full protocol (--frozen-baseline train: (d) trains its baseline)" if args.full_protocol else "defaults"
    print(f"{args.count} checkpoints ({len(ckpts)} shipped ResMLPs repeated), whole `fadiag audit` commands with "
          f"{what}, best of {args.repeats}")
    print("| backend | wall s | vs --jobs 1 | output identical to --jobs 1 |")
    print("|---|---|---|---|")
    print(f"| --jobs 1 | {times['--jobs 1']:.1f} | 1.00x | - |")
    for name in ("--jobs 2", "--jobs 2, no preload"):
        print(f"| {name} | {times[name]:.1f} | {_ratio(times['--jobs 1'], times[name])} | {same} |")
    if dask_t is not None:
        print(f"| Dask LocalCluster, 2 workers (started in {start:.1f} s, not counted) | {dask_t:.1f} | "
              f"{_ratio(times['--jobs 1'], dask_t)} ({_ratio(times['--jobs 2'], dask_t)} than --jobs 2) "
              f"| {same_dask} |")


def _ratio(base: float, t: float) -> str:
    return f"{base / t:.2f}x faster" if t <= base else f"{t / base:.2f}x slower"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("threads")
    t.add_argument("--repeats", type=int, default=3)
    b = sub.add_parser("big")
    b.add_argument("--n", type=int, default=10000)
    b.add_argument("--m", type=int, default=300000)
    b.add_argument("--ties", action="store_true")
    b.add_argument("--spool", default=None)
    b.add_argument("--max-memory", default="4GiB")
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--no-floor", dest="floor", action="store_false", help="skip the floor (saves its run time)")
    b.add_argument("--no-subset", dest="subset", action="store_false", help="skip the 2000 x 20000 W check")
    s = sub.add_parser("sweep")
    s.add_argument("--count", type=int, default=20)
    s.add_argument("--repeats", type=int, default=1)
    s.add_argument("--full-protocol", action="store_true",
                   help="audit with --frozen-baseline train (each audit trains its (d) baseline: seconds, not 0.05 s)")
    args = ap.parse_args()
    {"threads": bench_threads, "big": bench_big, "sweep": bench_sweep}[args.what](args)


if __name__ == "__main__":
    main()
