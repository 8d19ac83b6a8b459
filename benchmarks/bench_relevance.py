"""Cost of the state-only relevance report (docs/science.md §4: a daemon logs it every minute).

    python benchmarks/bench_relevance.py [--calls 2000]

Shape: 12 features, (64, 64) trunk, 5 heads, with normaliser, per-weight step sizes (input layer and
heads) and input-layer traces, so every field of the report is present. Three timings, median per call
over --calls calls after a warm-up, in one process so they are comparable as ratios:

  fadiag  relevance_report(state)            state built once (its float64 numpy copies cached);
                                             every call redoes all the math and builds fresh dicts
  fadiag  state + report                     learner_state_from_state_dict(sd) + relevance_report:
                                             what a daemon pays when the weights changed since last time
  naive   torch, op per field                the obvious implementation: torch ops per field and head,
                                             .tolist() into the same dict layout

Target: fadiag relevance_report <= 50 µs. Results in docs/relevance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from fadiag.diagnostics.relevance import learner_state_from_state_dict, relevance_report
from fadiag.models.multihead import MultiHeadLearner

F, HIDDEN, HEADS = 12, (64, 64), 5


def make_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    m = MultiHeadLearner(n_features=F, hidden=HIDDEN, n_heads=HEADS)
    m.update_normalizer(torch.randn(500, F) * torch.logspace(-2, 3, F) + 1.0)
    sd = dict(m.state_dict())
    sd["step_sizes.trunk.0.weight"] = torch.rand(HIDDEN[0], F) * 1e-3
    sd["step_sizes.heads.weight"] = torch.rand(HEADS, HIDDEN[-1]) * 1e-3
    sd["traces.trunk.0.weight"] = torch.randn(HIDDEN[0], F)
    return sd


def naive_report(sd: dict[str, torch.Tensor], fn: list[str], hn: list[str]) -> dict:
    """The obvious torch implementation of the same layout, one op per field (and per head)."""
    w0, w1, wh = sd["trunk.0.weight"], sd["trunk.1.weight"], sd["heads.weight"]
    var = sd["norm_var"]
    std = torch.sqrt(var + 1e-8)
    p = w1.abs() @ w0.abs()
    trunk = {
        "step_size_activity": dict(zip(fn, sd["step_sizes.trunk.0.weight"].abs().mean(0).tolist())),
        "trace_activity": dict(zip(fn, sd["traces.trunk.0.weight"].abs().mean(0).tolist())),
        "normalizer_mean": dict(zip(fn, sd["norm_mean"].tolist())),
        "normalizer_std": dict(zip(fn, std.tolist())),
    }
    per_head = {}
    for h, name in enumerate(hn):
        rel = wh[h].abs() @ p
        per_head[name] = {
            "weight_relevance": dict(zip(fn, rel.tolist())),
            "normalized_weight_relevance": dict(zip(fn, (rel * std).tolist())),
            "per_raw_unit_relevance": dict(zip(fn, (rel / (var.sqrt() + 1e-8)).tolist())),
            "head_reliance": {f"neuron_{j}": v for j, v in enumerate(wh[h].abs().tolist())},
            "mean_step_size": sd["step_sizes.heads.weight"][h].abs().mean().item(),
        }
    return {"trunk": trunk, "per_head": per_head}


def median_us(fn, calls: int, warmup: int = 200) -> float:
    for _ in range(warmup):
        fn()
    times = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="repeat the three timings; report the best median")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sd = make_state_dict()
    fn = [f"f{i}" for i in range(F)]
    hn = [f"h{i}" for i in range(HEADS)]
    state = learner_state_from_state_dict(sd)

    # Same numbers from both (float32 torch vs float64 numpy: compare loosely).
    a, b = relevance_report(state, fn, hn), naive_report(sd, fn, hn)
    for h in hn:
        for field in ("weight_relevance", "per_raw_unit_relevance", "head_reliance"):
            for k, v in a["per_head"][h][field].items():
                assert abs(v - b["per_head"][h][field][k]) <= 1e-5 * max(1.0, abs(v)), (h, field, k)

    cases = {
        "fadiag relevance_report(state)": lambda: relevance_report(state, fn, hn),
        "fadiag state + report": lambda: relevance_report(learner_state_from_state_dict(sd), fn, hn),
        "naive torch, op per field": lambda: naive_report(sd, fn, hn),
    }
    best = {k: min(median_us(f, args.calls) for _ in range(args.rounds)) for k, f in cases.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {F} features, trunk {HIDDEN}, {HEADS} heads; median of {args.calls} calls, best of "
          f"{args.rounds} rounds; torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"{platform.python_implementation()} {platform.python_version()}, load avg {load:.2f}")
    for k, v in best.items():
        print(f"{k:34s} {v:8.1f} µs")
    naive = best["naive torch, op per field"]
    print(f"ratio naive / relevance_report     {naive / best['fadiag relevance_report(state)']:8.2f}x")
    print(f"ratio naive / state + report       {naive / best['fadiag state + report']:8.2f}x")
    print(f"target <= 50 µs: {'met' if best['fadiag relevance_report(state)'] <= 50 else 'NOT met'}")
    jacobian(sd, args)


#: alberta-framework's jax.jit-compiled compute_feature_sensitivity, one call at this shape (issue 25's
#: measurement, recorded in docs/relevance.md; JAX is not installed here)
UPSTREAM_JIT_US = 177.0


def jacobian(sd: dict, args) -> None:
    """The sensitivity tier's Jacobian at one observation: closed form vs reverse mode, and upstream's number."""
    from fadiag.diagnostics.relevance import sensitivity
    from fadiag.models.multihead import split_state

    m = MultiHeadLearner(n_features=F, hidden=HIDDEN, n_heads=HEADS)
    m.load_state_dict(split_state(sd)[0])
    m.eval()
    x = torch.randn(F) * 3
    rev = lambda: torch.func.jacrev(lambda v: m(v.unsqueeze(0)).squeeze(0))(x)  # noqa: E731
    torch.testing.assert_close(sensitivity(m, x), rev().detach(), rtol=1e-5, atol=1e-6)
    cf = min(median_us(lambda: sensitivity(m, x), args.calls) for _ in range(args.rounds))
    rv = min(median_us(rev, max(1, args.calls // 4)) for _ in range(args.rounds))
    print(f"sensitivity, closed form           {cf:8.1f} µs")
    print(f"sensitivity, torch.func.jacrev     {rv:8.1f} µs  ({rv / cf:.1f}x the closed form)")
    print(f"upstream jitted (recorded)         {UPSTREAM_JIT_US:8.1f} µs  (closed form / upstream "
          f"{cf / UPSTREAM_JIT_US:.2f}x; target <= 1)")


if __name__ == "__main__":
    main()
