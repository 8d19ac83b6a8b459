"""``fadiag edges``: function -> function edge evidence of a graph-structured network (docs/science.md §3).

Observations are streamed batch by batch (one forward + backward each, in eval mode, model state
restored), reduced per node, paired (activations of block l with gradients of block l+1), then
correlated in one N x N act-vs-grad block (optionally in row chunks, optionally bootstrapped), scaled
and penalised as asked, and scored against a truth edge list (MRR with competing-true masking, mid-rank
ties, NaN -> -inf, Hits@k, and the random-ranking baseline).

Report: :class:`fadiag.families.edges.report.EdgesReport`, schema "fadiag.edges/2" (docs/json.md). The full matrix
goes to ``--matrix OUT.npy``; the ranked list to ``--edges OUT.tsv`` (fadiag.families.edges.files).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ... import __version__
from ...diagnostics.common import STD_FLOOR, count_nonfinite
from .files import read_edge_list, write_edges_tsv, write_matrix
from ...errors import InputError
from ...reports.base import Flag

__all__ = ["edges", "collect_observations", "read_edge_list", "write_edges_tsv", "write_matrix"]

MAX_NODES = 100_000
MAX_BOOTSTRAP = 100_000

_CHOICES = {"method": ("spearman", "pearson"), "where": ("pre", "post"), "norm": ("l1", "l2", "none"),
            "agg": ("sum", "mean", "max"), "loss": ("ce", "mse")}


@dataclass(frozen=True)
class EdgeOptions:
    """The validated options of one edges run: flags over the spec's ``edges:`` section (docs/edges.md)."""

    method: str
    row_chunk: int | None
    bootstrap: int | None
    samples: int | None
    penalty: float
    scale: bool
    where: str
    norm: str
    agg: str
    loss: str
    ties: str
    seed: int

    def params(self, m: int) -> dict:
        """The report's ``params`` (samples defaults to M under --bootstrap)."""
        return {"method": self.method, "where": self.where, "norm": self.norm, "agg": self.agg, "loss": self.loss,
                "row_chunk": self.row_chunk, "bootstrap": self.bootstrap,
                "samples": (self.samples or m) if self.bootstrap else None, "seed": self.seed,
                "penalty": self.penalty, "scale_by_act_mean": self.scale, "ties": self.ties}


def edge_options(es, *, method=None, row_chunk=None, bootstrap=None, samples=None, penalty=None,
                 scale_by_act_mean=None, where=None, norm=None, agg=None, loss=None, ties=None,
                 seed: int = 0) -> EdgeOptions:
    """Each option: the argument when given, else the spec's ``edges:`` value ``es``; InputError if bad."""
    o = EdgeOptions(method=method or es.method, row_chunk=row_chunk if row_chunk is not None else es.row_chunk,
                    bootstrap=bootstrap, samples=samples, penalty=es.penalty if penalty is None else penalty,
                    scale=es.scale_by_act_mean if scale_by_act_mean is None else scale_by_act_mean,
                    where=where or es.where, norm=norm or es.norm, agg=agg or es.agg, loss=loss or es.loss,
                    ties=ties or es.ties, seed=seed)
    if o.ties not in ("average", "ordinal"):
        raise InputError(f"expected average or ordinal, got {o.ties!r}", source="--ties")
    if o.ties == "ordinal" and o.bootstrap:
        raise InputError("ordinal ties are for reproducing upstream's plain fit; not with --bootstrap", source="--ties")
    for name, ok in _CHOICES.items():
        if getattr(o, name) not in ok:
            raise InputError(f"expected one of {', '.join(ok)}, got {getattr(o, name)!r}", source=f"--{name}")
    if o.row_chunk is not None and not (isinstance(o.row_chunk, int) and 1 <= o.row_chunk <= 10_000_000):
        raise InputError(f"must be a positive integer (rows of W per chunk), got {o.row_chunk}", source="--row-chunk")
    if not (math.isfinite(o.penalty) and 0.0 <= o.penalty < 1.0):
        raise InputError(f"must be in [0, 1), got {o.penalty}", source="--penalty")
    if o.bootstrap is not None and not 1 <= o.bootstrap <= MAX_BOOTSTRAP:
        raise InputError(f"must be in 1..{MAX_BOOTSTRAP}, got {o.bootstrap}", source="--bootstrap")
    if o.samples is not None and not o.bootstrap:
        raise InputError("only meaningful with --bootstrap ITERS", source="--samples")
    if o.samples is not None and not 1 <= o.samples <= 100_000_000:
        raise InputError(f"must be in 1..100000000, got {o.samples}", source="--samples")
    return o


def collect_observations(model, batches, *, where: str, norm: str, agg: str, loss: str, device: str,
                         progress=None, spool=None):
    """Stream the eval batches: per batch one capture, reduced per node and paired -> (A, G), each (M, N).
    With ``spool`` (an ObservationSpool) the rows go to disk instead and (None, None, losses) is returned."""
    import torch

    from ...diagnostics.edges import capture_block_signals, pair_observations, reduce_channels

    groups = getattr(model, "channel_groups", None)
    n_nodes = getattr(model, "n_nodes", None)
    if groups is None or n_nodes is None:
        raise InputError("edges needs a graph-structured model with channel_groups and n_nodes (arch gsnn)",
                         source="model")
    A, G, losses = [], [], []
    for i, (x, y) in enumerate(batches):
        try:
            acts, grads, lv = capture_block_signals(model, x.to(device), y.to(device), where=where, loss=loss)
        except ValueError as e:
            raise InputError(str(e), source="edges") from None
        if acts.shape[0] < 2:
            raise InputError("edge inference pairs block l with block l+1: the model needs at least 2 blocks",
                             source="model")
        a, g = pair_observations(reduce_channels(acts, groups, n_nodes, norm, agg),
                                 reduce_channels(grads, groups, n_nodes, norm, agg))
        if spool is not None:
            spool.append(a, g)
        else:
            A.append(a)
            G.append(g)
        losses.append(lv)
        if progress:
            progress(i + 1, len(batches))
    if spool is not None:
        return None, None, losses
    return torch.cat(A), torch.cat(G), losses


@dataclass
class _Evidence:
    """What the correlation step hands on: W (N, N), the constant-column counts, M, the non-finite count,
    the per-batch losses, and what scale_by_act_mean needs (A in memory, its column means out of core)."""

    W: object
    info: dict
    m: int
    nonfinite: int
    losses: list
    A: object = None
    act_mean: object = None

    def scaled(self):
        from ...diagnostics import edges as E

        if self.A is not None:
            return E.scale_by_act_mean(self.W, self.A)
        return self.W * self.act_mean.to(self.W.dtype)[:, None]


def edges(subject, *, method: str | None = None, row_chunk: int | None = None, bootstrap: int | None = None,
          samples: int | None = None, penalty: float | None = None, scale_by_act_mean: bool | None = None,
          truth: str | None = None, held_out: str | None = None, top: int = 20, where: str | None = None,
          norm: str | None = None, agg: str | None = None, loss: str | None = None, seed: int = 0,
          progress=None, ties: str | None = None, known: str | None = None, spool: str | None = None,
          max_memory=None, threads: int | None = None):
    """Returns (EdgesReport, W (N, N) tensor).

    ties: "average" (textbook Spearman, the default) or "ordinal" (upstream GSNN's ranks, opt-in).
    known: edge-list file of the known function -> function edges for the penalty (default: edges.known,
    else the model's ``known_edges`` (gsnn-upstream), else its ``edge_index``).
    Out of core (docs/scale.md): with ``spool`` (a folder), or when the in-memory path would need more
    than ``max_memory`` (default: 80% of the available RAM), the observations are spooled to disk and W
    is computed within max_memory. ``threads``: torch threads (default: 1 for the model passes, every core
    for a large correlation; OMP_NUM_THREADS when set), recorded under ``runtime``."""
    from ...diagnostics import edges as E
    from .report import EdgesReport

    sp = subject.spec
    o = edge_options(sp.edges, method=method, row_chunk=row_chunk, bootstrap=bootstrap, samples=samples,
                     penalty=penalty, scale_by_act_mean=scale_by_act_mean, where=where, norm=norm, agg=agg,
                     loss=loss, ties=ties, seed=seed)
    if top < 0 or top > 100_000:
        raise InputError(f"must be in 0..100000, got {top}", source="--top")
    model = subject.model
    n = int(getattr(model, "n_nodes", 0) or 0)
    if n > MAX_NODES:
        raise InputError(f"{n} nodes is over the {MAX_NODES}-node limit", source="model")
    if getattr(model, "is_upstream_gsnn", False):
        model.where = o.where  # upstream's capture points: pre = lin_in's output, post = lin_out's input
    runtime: dict = {}
    ev = _evidence(subject, n, o, runtime, spool=spool, max_memory=max_memory, threads=threads, progress=progress)
    W = ev.scaled() if o.scale else ev.W
    known_edges = _known_edges(subject, n, known)
    if o.penalty:
        if known_edges is None:
            raise InputError("--penalty needs the model's known edge_index", source="--penalty")
        W = E.apply_known_edge_penalty(W, known_edges, o.penalty)
    scoring, true_set = _scoring(subject, W, n, truth, held_out)
    known_set = set(map(tuple, known_edges.T.tolist())) if known_edges is not None else set()
    rep = EdgesReport(
        fadiag_version=__version__, method_name=sp.audit.method_name or subject.path, n_nodes=n,
        n_observations=ev.m, n_blocks=len(model.blocks), params=o.params(ev.m), constant_columns=ev.info,
        scoring=scoring, top_edges=_top_edges(W, top, known_set, true_set),
        mean_loss=sum(ev.losses) / len(ev.losses) if ev.losses else None, flags=_flags(ev.nonfinite, scoring),
        checkpoint=subject.checkpoint.describe(), data=dict(subject.data_info), spec=sp.origin, runtime=runtime)
    return rep, W


def _evidence(subject, n: int, o: EdgeOptions, runtime: dict, *, spool, max_memory, threads,
              progress) -> _Evidence:
    """Observe and correlate, in memory or out of core; torch's thread count is restored afterwards and
    ``runtime`` records the threads used (and the spool's sizes out of core)."""
    import torch

    from ...diagnostics import edges as E
    from ...run.sweep import choose_threads, set_threads

    threads_before = torch.get_num_threads()
    n_threads = set_threads(choose_threads(threads, macs=subject.batch_macs))
    runtime.update({"threads": n_threads, "observations": "in-memory"})
    try:
        try:
            budget = E.parse_memory(max_memory) if max_memory is not None else None
        except ValueError as e:
            raise InputError(str(e), source="--max-memory") from None
        if spool is not None and not Path(spool).is_dir():
            raise InputError("spool folder does not exist", source=f"--spool {spool}")
        est_m = (len(subject.model.blocks) - 1) * sum(len(x) for x, _ in subject.batches)
        limit = budget if budget is not None else _available_memory() * 0.8
        if spool is not None or (limit and E.in_memory_bytes(est_m, n) > limit):
            return _out_of_core(subject, n, o, runtime, folder=spool, max_memory=budget, threads=threads,
                                progress=progress)
        return _in_memory(subject, n, o, runtime, threads=threads, progress=progress)
    finally:
        set_threads(threads_before)


def _in_memory(subject, n: int, o: EdgeOptions, runtime: dict, *, threads, progress) -> _Evidence:
    import torch

    from ...diagnostics import edges as E
    from ...run.sweep import choose_threads, set_threads

    A, G, losses = collect_observations(subject.model, subject.batches, where=o.where, norm=o.norm, agg=o.agg,
                                        loss=o.loss, device=subject.device, progress=progress)
    m = A.shape[0]
    nonfinite = count_nonfinite(A, G)
    info = {"n_constant_act": 0, "n_constant_grad": 0}
    runtime["correlation_threads"] = set_threads(choose_threads(threads, entries=m * n))
    if nonfinite:
        W = torch.full((n, n), float("nan"))
    elif o.bootstrap:
        ns = o.samples if o.samples is not None else m
        if ns > max(100 * m, 1_000_000):
            raise InputError(f"{ns} rows per resample is over the limit of max(100 x M, 1,000,000) = "
                             f"{max(100 * m, 1_000_000):,} for M = {m} observations", source="--samples")
        W = E.bootstrap_evidence(A, G, o.bootstrap, ns, seed=o.seed, method=o.method, row_chunk=o.row_chunk,
                                 progress=(lambda i, k: progress(i, k, "bootstrap")) if progress else None)
        info = _constant_info(A, G)
    elif o.ties == "ordinal":
        from ...compat.gsnn import ordinal_edge_evidence

        W, info = ordinal_edge_evidence(A, G, o.method, o.row_chunk), _constant_info(A, G)
    else:
        W, info = E.edge_evidence(A, G, method=o.method, row_chunk=o.row_chunk, return_info=True)
    return _Evidence(W, info, m, nonfinite, losses, A=A)


def _out_of_core(subject, n: int, o: EdgeOptions, runtime: dict, *, folder, max_memory, threads,
                 progress) -> _Evidence:
    """The observations spooled to disk, W within max_memory."""
    import torch

    from ...diagnostics import edges as E
    from ...run.sweep import choose_threads, set_threads

    if o.ties == "ordinal":
        raise InputError("ordinal ties (upstream's ranks) run in memory only (drop --spool/--max-memory)",
                         source="--ties")
    if o.bootstrap:
        raise InputError("--bootstrap resamples the observations in memory; it cannot run out of core "
                         "(drop --spool/--max-memory, or lower --batches)", source="--bootstrap")
    ooc: dict = {}
    try:
        with E.ObservationSpool(n, folder=folder, max_memory=max_memory) as sp:
            _, _, losses = collect_observations(subject.model, subject.batches, where=o.where, norm=o.norm,
                                                agg=o.agg, loss=o.loss, device=subject.device, progress=progress,
                                                spool=sp)
            set_threads(choose_threads(threads, entries=sp.m * n))
            info = {"n_constant_act": 0, "n_constant_grad": 0}
            plan = {}
            if sp.n_nonfinite:
                W = torch.full((n, n), float("nan"))
            else:
                W, full = sp.evidence(o.method)
                info = {k: full[k] for k in info}
                plan = {k: full[k] for k in ("col_block", "gemm_rows")}
            ooc = {"observations": "out-of-core", "spool_bytes": sp.spool_bytes, "max_memory_bytes": sp.max_memory,
                   **plan}
            ev = _Evidence(W, info, sp.m, sp.n_nonfinite, losses, act_mean=sp.act_mean())
    except ValueError as e:
        raise InputError(str(e), source="--max-memory") from None
    finally:
        runtime["correlation_threads"] = torch.get_num_threads()
    runtime.update(ooc, peak_rss_bytes=_peak_rss())
    return ev


def _known_edges(subject, n: int, known: str | None):
    """The known function -> function edges (2, E): --known, else edges.known, else the model's own."""
    model = subject.model
    path = known or subject.spec.resolve(subject.spec.edges.known)
    if path:
        return read_edge_list(path, n, getattr(model, "node_names", None))
    found = getattr(model, "known_edges", None)
    return getattr(model, "edge_index", None) if found is None else found


def _scoring(subject, W, n: int, truth: str | None, held_out: str | None):
    """(the report's ``scoring`` or None without a truth file, the set of true edges)."""
    from ...diagnostics import edges as E

    sp = subject.spec
    truth_path = truth or sp.resolve(sp.edges.truth)
    held_path = held_out or sp.resolve(sp.edges.held_out)
    if not truth_path:
        return None, set()
    names = getattr(subject.model, "node_names", None)
    true_edges = read_edge_list(truth_path, n, names)
    query = read_edge_list(held_path, n, names) if held_path else true_edges
    r = E.mrr(W, query, true_edges)
    scoring = {k: r[k] for k in ("mrr", "hits@1", "hits@3", "hits@10", "random_mrr", "n_queries")}
    scoring["queries"] = "held-out edges from " + held_path if held_path else "all truth edges"
    scoring["truth"] = truth_path
    return scoring, set(map(tuple, true_edges.T.tolist()))


def _flags(nonfinite: int, scoring: dict | None) -> tuple:
    flags = [Flag("nonfinite", "non-finite activations or gradients", nonfinite > 0, float(nonfinite), 0.0,
                  f"{nonfinite} NaN/Inf value(s) in the captured signals")]
    if scoring is not None:
        ok = math.isfinite(scoring["mrr"]) and scoring["mrr"] > scoring["random_mrr"]
        flags.append(Flag("mrr", "MRR not above the random-ranking baseline", not ok,
                          scoring["mrr"] if math.isfinite(scoring["mrr"]) else None, scoring["random_mrr"],
                          f"MRR {scoring['mrr']:.4f} vs random {scoring['random_mrr']:.4f} over "
                          f"{scoring['n_queries']} queries"))
    return tuple(flags)


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo (bytes), 0 where unknown (then nothing is spooled unasked)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _peak_rss() -> int | None:
    try:
        import resource
        import sys

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r if sys.platform == "darwin" else r * 1024)
    except (ImportError, OSError):
        return None


def _constant_info(A, G) -> dict:
    std_a = A.double().std(0, unbiased=False)
    std_g = G.double().std(0, unbiased=False)
    return {"n_constant_act": int((std_a <= STD_FLOOR).sum()), "n_constant_grad": int((std_g <= STD_FLOOR).sum())}


def _top_edges(W, k: int, known: set, true: set) -> list:
    import torch

    n = W.shape[0]
    if k == 0 or n < 2:
        return []
    S = torch.nan_to_num(W.double().clone(), nan=-math.inf)
    S.fill_diagonal_(-math.inf)  # self-pairs are not edges
    k = min(k, n * (n - 1))
    vals, idx = torch.topk(S.flatten(), k)
    out = []
    for rank, (v, i) in enumerate(zip(vals.tolist(), idx.tolist()), start=1):
        s, d = divmod(i, n)
        out.append({"rank": rank, "source": s, "target": d, "score": v, "known": (s, d) in known,
                    "true": (s, d) in true if true else None})
    return out
