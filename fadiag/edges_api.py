"""``fadiag edges``: function -> function edge evidence of a graph-structured network (docs/science.md §3).

Observations are streamed batch by batch (one forward + backward each, in eval mode, model state
restored), reduced per node, paired (activations of block l with gradients of block l+1), then
correlated in one N x N act-vs-grad block (optionally in row chunks, optionally bootstrapped), scaled
and penalised as asked, and scored against a truth edge list (MRR with competing-true masking, mid-rank
ties, NaN -> -inf, Hits@k, and the random-ranking baseline).

Report schema "fadiag.edges/1". The full matrix goes to ``--matrix OUT.npy``; the ranked list to
``--edges OUT.tsv``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

from . import __version__
from .errors import InputError
from .report import Flag, clean

EDGES_SCHEMA = "fadiag.edges/1"
MAX_NODES = 100_000
MAX_BOOTSTRAP = 100_000


def read_edge_list(path: str, n_nodes: int, names=None):
    """Edge list file -> LongTensor (2, E). TSV/CSV with two integer columns (a header line such as
    ``source<TAB>target`` is skipped), or .npy of shape (E, 2) / (2, E) integers (allow_pickle=False).
    With ``names`` (node id -> name, e.g. upstream GSNN's ``node_names_dict['function']``) a row may name
    its two nodes instead."""
    index = {str(v): i for i, v in enumerate(names)} if names else {}
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError("no such edge-list file", source=str(path))
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as e:
            raise InputError(f"cannot read .npy edge list ({type(e).__name__})", source=str(path)) from None
        if arr.ndim != 2 or 2 not in arr.shape or arr.dtype.kind not in "iu":
            raise InputError(f"expected an integer array (E, 2) or (2, E), got {arr.shape} {arr.dtype}",
                             source=str(path))
        t = torch.from_numpy(arr.astype(np.int64))
        t = t if t.shape[0] == 2 and t.shape[1] != 2 else t.T
    else:
        text = p.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        dialect = "excel-tab" if lines and "\t" in lines[0] else "excel"
        pairs = []
        seen_data = False
        for i, row in enumerate(csv.reader(lines, dialect=dialect), start=1):
            row = [c.strip() for c in row if c.strip() != ""]
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise InputError(f"line {i}: expected two columns (source, target)", source=str(path))
            try:
                pairs.append((int(row[0]), int(row[1])))
                seen_data = True
            except ValueError:
                if row[0] in index and row[1] in index:
                    pairs.append((index[row[0]], index[row[1]]))
                    seen_data = True
                    continue
                if not seen_data:
                    seen_data = True  # the first non-comment line may be a header
                    continue
                raise InputError(f"line {i}: node ids must be integers, got {row[:2]}", source=str(path)) from None
        if not pairs:
            raise InputError("edge list is empty", source=str(path))
        t = torch.tensor(pairs, dtype=torch.long).T
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_nodes):
        raise InputError(f"node ids must be in 0..{n_nodes - 1}, found {int(t.min())}..{int(t.max())}",
                         source=str(path))
    return t


def collect_observations(model, batches, *, where: str, norm: str, agg: str, loss: str, device: str,
                         progress=None, spool=None):
    """Stream the eval batches: per batch one capture, reduced per node and paired -> (A, G), each (M, N).
    With ``spool`` (an ObservationSpool) the rows go to disk instead and (None, None, losses) is returned."""
    import torch

    from .diagnostics.edges import capture_block_signals, pair_observations, reduce_channels

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


def edges(subject, *, method: str | None = None, row_chunk: int | None = None, bootstrap: int | None = None,
          samples: int | None = None, penalty: float | None = None, scale_by_act_mean: bool | None = None,
          truth: str | None = None, held_out: str | None = None, top: int = 20, where: str | None = None,
          norm: str | None = None, agg: str | None = None, loss: str | None = None, seed: int = 0,
          progress=None, ties: str | None = None, known: str | None = None, spool: str | None = None,
          max_memory=None, threads: int | None = None):
    """Returns (report dict, W (N, N) tensor).

    ties: "average" (textbook Spearman, the default) or "ordinal" (upstream GSNN's ranks, opt-in).
    known: edge-list file of the known function -> function edges for the penalty (default: edges.known,
    else the model's ``known_edges`` (gsnn-upstream), else its ``edge_index``).
    Out of core (docs/scale.md): with ``spool`` (a folder), or when the in-memory path would need more
    than ``max_memory`` (default: 80% of the available RAM), the observations are spooled to disk and W
    is computed within max_memory. ``threads``: torch threads (default: 1 for the model passes, every core
    for a large correlation; OMP_NUM_THREADS when set), recorded under ``runtime``."""
    import torch

    from .diagnostics import edges as E

    sp = subject.spec
    es = sp.edges
    method = method or es.method
    row_chunk = row_chunk if row_chunk is not None else es.row_chunk
    penalty = es.penalty if penalty is None else penalty
    scale = es.scale_by_act_mean if scale_by_act_mean is None else scale_by_act_mean
    where, norm, agg, loss = where or es.where, norm or es.norm, agg or es.agg, loss or es.loss
    ties = ties or es.ties
    if ties not in ("average", "ordinal"):
        raise InputError(f"expected average or ordinal, got {ties!r}", source="--ties")
    if ties == "ordinal" and bootstrap:
        raise InputError("ordinal ties are for reproducing upstream's plain fit; not with --bootstrap", source="--ties")
    for name, v, ok in (("--method", method, ("spearman", "pearson")), ("--where", where, ("pre", "post")),
                        ("--norm", norm, ("l1", "l2", "none")), ("--agg", agg, ("sum", "mean", "max")),
                        ("--loss", loss, ("ce", "mse"))):
        if v not in ok:
            raise InputError(f"expected one of {', '.join(ok)}, got {v!r}", source=name)
    if row_chunk is not None and not (isinstance(row_chunk, int) and 1 <= row_chunk <= 10_000_000):
        raise InputError(f"must be a positive integer (rows of W per chunk), got {row_chunk}", source="--row-chunk")
    if not (math.isfinite(penalty) and 0.0 <= penalty < 1.0):
        raise InputError(f"must be in [0, 1), got {penalty}", source="--penalty")
    if bootstrap is not None and not 1 <= bootstrap <= MAX_BOOTSTRAP:
        raise InputError(f"must be in 1..{MAX_BOOTSTRAP}, got {bootstrap}", source="--bootstrap")
    if samples is not None and not bootstrap:
        raise InputError("only meaningful with --bootstrap ITERS", source="--samples")
    if samples is not None and not 1 <= samples <= 100_000_000:
        raise InputError(f"must be in 1..100000000, got {samples}", source="--samples")
    if top < 0 or top > 100_000:
        raise InputError(f"must be in 0..100000, got {top}", source="--top")
    model = subject.model
    n = int(getattr(model, "n_nodes", 0) or 0)
    if n > MAX_NODES:
        raise InputError(f"{n} nodes is over the {MAX_NODES}-node limit", source="model")

    if getattr(model, "is_upstream_gsnn", False):
        model.where = where  # upstream's capture points: pre = lin_in's output, post = lin_out's input
    from .sweep import choose_threads, set_threads

    threads_before = torch.get_num_threads()
    runtime = {"threads": set_threads(choose_threads(threads)), "observations": "in-memory"}
    try:
        budget = E.parse_memory(max_memory) if max_memory is not None else None
    except ValueError as e:
        raise InputError(str(e), source="--max-memory") from None
    if spool is not None and not Path(spool).is_dir():
        raise InputError("spool folder does not exist", source=f"--spool {spool}")
    est_m = (len(model.blocks) - 1) * sum(len(x) for x, _ in subject.batches)
    limit = budget if budget is not None else _available_memory() * 0.8
    if spool is not None or (limit and E.in_memory_bytes(est_m, n) > limit):
        if ties == "ordinal":
            raise InputError("ordinal ties (upstream's ranks) run in memory only (drop --spool/--max-memory)",
                             source="--ties")
        if bootstrap:
            raise InputError("--bootstrap resamples the observations in memory; it cannot run out of core "
                             "(drop --spool/--max-memory, or lower --batches)", source="--bootstrap")
        try:
            W, info, m, nonfinite, losses, act_mean, ooc = _edges_out_of_core(
                model, subject, n, where=where, norm=norm, agg=agg, loss=loss, method=method, folder=spool,
                max_memory=budget, threads=threads, progress=progress)
        except ValueError as e:
            raise InputError(str(e), source="--max-memory") from None
        finally:
            runtime["correlation_threads"] = torch.get_num_threads()
            set_threads(threads_before)
        runtime.update(ooc)
        A = None
    else:
        A, G, losses = collect_observations(model, subject.batches, where=where, norm=norm, agg=agg, loss=loss,
                                            device=subject.device, progress=progress)
        m = A.shape[0]
        nonfinite = int((~torch.isfinite(A)).sum() + (~torch.isfinite(G)).sum())
        info = {"n_constant_act": 0, "n_constant_grad": 0}
        runtime["correlation_threads"] = set_threads(choose_threads(threads, entries=m * n))
    if A is None:
        pass  # out of core: W and info came from the spool
    elif nonfinite:
        W = torch.full((n, n), float("nan"))
    elif bootstrap:
        ns = samples if samples is not None else m
        if ns > max(100 * m, 1_000_000):
            raise InputError(f"{ns} rows per resample is over the limit of max(100 x M, 1,000,000) = "
                             f"{max(100 * m, 1_000_000):,} for M = {m} observations", source="--samples")
        W = E.bootstrap_evidence(A, G, bootstrap, ns, seed=seed, method=method, row_chunk=row_chunk,
                                 progress=(lambda i, k: progress(i, k, "bootstrap")) if progress else None)
        info = _constant_info(A, G)
    elif ties == "ordinal":
        from .compat.gsnn import ordinal_edge_evidence

        W, info = ordinal_edge_evidence(A, G, method, row_chunk), _constant_info(A, G)
    else:
        W, info = E.edge_evidence(A, G, method=method, row_chunk=row_chunk, return_info=True)
    set_threads(threads_before)
    if scale:
        W = E.scale_by_act_mean(W, A) if A is not None else W * act_mean.to(W.dtype)[:, None]
    known_path = known or sp.resolve(es.known)
    if known_path:
        known = read_edge_list(known_path, n, getattr(model, "node_names", None))
    else:
        known = getattr(model, "known_edges", None)
        if known is None:
            known = getattr(model, "edge_index", None)
    if penalty:
        if known is None:
            raise InputError("--penalty needs the model's known edge_index", source="--penalty")
        W = E.apply_known_edge_penalty(W, known, penalty)

    truth_path = truth or sp.resolve(es.truth)
    held_path = held_out or sp.resolve(es.held_out)
    scoring = None
    true_set = set()
    if truth_path:
        names = getattr(model, "node_names", None)
        true_edges = read_edge_list(truth_path, n, names)
        query = read_edge_list(held_path, n, names) if held_path else true_edges
        true_set = set(map(tuple, true_edges.T.tolist()))
        r = E.mrr(W, query, true_edges)
        scoring = {k: r[k] for k in ("mrr", "hits@1", "hits@3", "hits@10", "random_mrr", "n_queries")}
        scoring["queries"] = "held-out edges from " + held_path if held_path else "all truth edges"
        scoring["truth"] = truth_path
    known_set = set(map(tuple, known.T.tolist())) if known is not None else set()
    top_edges = _top_edges(W, top, known_set, true_set)

    flags = [Flag("nonfinite", "non-finite activations or gradients", nonfinite > 0, float(nonfinite), 0.0,
                  f"{nonfinite} NaN/Inf value(s) in the captured signals")]
    if scoring is not None:
        ok = math.isfinite(scoring["mrr"]) and scoring["mrr"] > scoring["random_mrr"]
        flags.append(Flag("mrr", "MRR not above the random-ranking baseline", not ok,
                          scoring["mrr"] if math.isfinite(scoring["mrr"]) else None, scoring["random_mrr"],
                          f"MRR {scoring['mrr']:.4f} vs random {scoring['random_mrr']:.4f} over "
                          f"{scoring['n_queries']} queries"))
    names = [f.name for f in flags if f.flagged]
    rep = clean({
        "schema": EDGES_SCHEMA, "fadiag_version": __version__, "method_name": sp.audit.method_name or subject.path,
        "n_nodes": n, "n_observations": m, "n_blocks": len(model.blocks),
        "params": {"method": method, "where": where, "norm": norm, "agg": agg, "loss": loss, "row_chunk": row_chunk,
                   "bootstrap": bootstrap, "samples": (samples or m) if bootstrap else None, "seed": seed,
                   "penalty": penalty, "scale_by_act_mean": scale, "ties": ties},
        "constant_columns": info, "scoring": scoring, "top_edges": top_edges,
        "mean_loss": sum(losses) / len(losses) if losses else None,
        "flags": [dataclasses.asdict(f) for f in flags],
        "verdict": "ok" if not names else "needs attention: " + "; ".join(names),
        "checkpoint": subject.checkpoint.describe(), "data": dict(subject.data_info), "spec": sp.origin,
        "runtime": runtime,
    })
    return rep, W


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


def _edges_out_of_core(model, subject, n, *, where, norm, agg, loss, method, folder, max_memory, threads,
                       progress):
    """The observations spooled to disk, W within max_memory: (W, info, M, nonfinite, losses, act_mean, runtime)."""
    import torch

    from .diagnostics import edges as E
    from .sweep import choose_threads, set_threads

    with E.ObservationSpool(n, folder=folder, max_memory=max_memory) as sp:
        _, _, losses = collect_observations(model, subject.batches, where=where, norm=norm, agg=agg, loss=loss,
                                            device=subject.device, progress=progress, spool=sp)
        set_threads(choose_threads(threads, entries=sp.m * n))
        info = {"n_constant_act": 0, "n_constant_grad": 0}
        plan = {}
        if sp.n_nonfinite:
            W = torch.full((n, n), float("nan"))
        else:
            W, full = sp.evidence(method)
            info = {k: full[k] for k in info}
            plan = {k: full[k] for k in ("col_block", "gemm_rows")}
        runtime = {"observations": "out-of-core", "spool_bytes": sp.spool_bytes, "max_memory_bytes": sp.max_memory,
                   **plan}
        m, nonfinite, act_mean = sp.m, sp.n_nonfinite, sp.act_mean()
    runtime["peak_rss_bytes"] = _peak_rss()
    return W, info, m, nonfinite, losses, act_mean, runtime


def _constant_info(A, G) -> dict:
    std_a = A.double().std(0, unbiased=False)
    std_g = G.double().std(0, unbiased=False)
    return {"n_constant_act": int((std_a <= 1e-12).sum()), "n_constant_grad": int((std_g <= 1e-12).sum())}


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


def write_edges_tsv(W, path: str) -> None:
    """All off-diagonal pairs ranked by score: source, target, score, rank (1 = strongest). Atomic."""
    import torch

    from .atomic import atomic_path

    n = W.shape[0]
    S = torch.nan_to_num(W.double().clone(), nan=-math.inf)
    S.fill_diagonal_(-math.inf)
    order = torch.argsort(S.flatten(), descending=True, stable=True)[: n * (n - 1)]
    vals = W.flatten()[order].tolist()
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("source\ttarget\tscore\trank\n")
        for rank, (i, v) in enumerate(zip(order.tolist(), vals), start=1):
            s, d = divmod(i, n)
            f.write(f"{s}\t{d}\t{v!r}\t{rank}\n")


def write_matrix(W, path: str) -> None:
    import numpy as np

    from .atomic import atomic_path

    if not str(path).endswith(".npy"):
        raise InputError("matrix file must end in .npy", source=str(path))
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, W.detach().cpu().numpy(), allow_pickle=False)
