"""Threads, sweeps over many checkpoints, and the optional Dask backend (docs/scale.md).

Threads: fadiag picks torch's intra-op thread count per workload (:func:`choose_threads`): ``--threads N``
first, else ``OMP_NUM_THREADS`` when set, else every core the process may use (:func:`cpu_count`: affinity
capped by a cgroup quota) for a model whose batch pass is large (``LARGE_MODEL_MACS`` multiply-adds, counted
on the trial forward) or an edge correlation large enough to pay (N x M >= ``LARGE_EDGE_ENTRIES``), else 1
(a small model's forward and backward gains nothing from a second thread and loses a lot under
contention). The report records the choice under ``runtime``.

Sweeps: :func:`run_sweep` maps one per-checkpoint function over the checkpoints (:func:`run_one`:
:func:`one`, the same code the CLI runs for one checkpoint, with its report as a dict, the wire format, and
what it would have written to stderr): in-process (``jobs=1``), in ``jobs`` worker processes (forked from a
fork server that imported torch and fadiag once, one intra-op thread each), or on a ``dask.distributed``
cluster. Reports come back in input order, so the output is byte-identical whatever the backend (a large
model in-process runs every core, the workers one thread: pass --threads to make those the same bytes too);
a journal (``--resume FILE.jsonl``) gets
each report the moment it finishes, so a killed sweep keeps what it finished and the next run skips
checkpoints whose resolved path, bytes (sha256, and the sidecar spec's) and settings are already in the
journal; a torn last line is cut off, never appended to. A worker exits within a second of its parent's death
(:func:`_init_worker`).

torch-free at import time (``import fadiag.cli`` must not import torch).
"""

from __future__ import annotations

import io
import os
import sys
from typing import Callable, Iterable

from ..errors import EXIT_INTERNAL, FadiagError, InputError
from .journal import Journal, checkpoint_key, file_sha256, read_journal, settings_key  # noqa: F401 (the journal)
from .threads import cpu_count

#: an edge correlation with at least this many (row, node) entries runs on every core
LARGE_EDGE_ENTRIES = 1 << 24
#: a model whose forward pass of one eval batch takes at least this many multiply-adds (its weight layers', counted
#: on the trial forward: fadiag.subject.Subject.batch_macs) runs on every core (docs/scale.md, "Threads")
LARGE_MODEL_MACS = 1 << 30
DASK_HINT = 'the Dask backend needs the "dask" extra: pip install "fadiag[dask]"'


# ------------------------------------------------------------------------------------------- threads

def env_threads() -> int | None:
    v = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(v) if v.isdigit() and int(v) > 0 else None


def choose_threads(requested: int | None = None, *, entries: int | None = None, macs: int | None = None) -> int:
    """torch intra-op threads: ``requested`` (--threads), else OMP_NUM_THREADS, else every core (cpu_count) for
    an edge correlation of ``entries`` = M x N >= LARGE_EDGE_ENTRIES or a model pass of ``macs`` multiply-adds a
    batch >= LARGE_MODEL_MACS, else 1."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or not 1 <= requested <= 1024:
            raise InputError(f"must be an integer in 1..1024, got {requested!r}", source="--threads")
        return requested
    env = env_threads()
    if env is not None:
        return env
    if (entries is not None and entries >= LARGE_EDGE_ENTRIES) or (macs is not None and macs >= LARGE_MODEL_MACS):
        return cpu_count()
    return 1


def set_threads(n: int) -> int:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


# ------------------------------------------------------------------------------- one checkpoint

def load_subject(path: str, o: dict, progress=None, **kw):
    """The subject; a spinner from the first second (checkpoint, spec, data, a trial forward pass)."""
    from ..subject import load

    with bar(progress, f"loading {os.path.basename(path)}"):
        subject = load(path, o.get("spec"), trust=bool(o.get("trust")), trust_code=bool(o.get("trust_code")),
                       spec_found=bool(o.get("spec_found")),
                       data=o.get("data"), seed=o.get("seed"), device=o.get("device") or "cpu", **kw)
    set_threads(choose_threads(o.get("threads"), macs=subject.batch_macs))  # every core for a large model
    return subject


def warn_half(subject, quiet: bool = False) -> None:
    """CHECKLIST fp16: half-precision weights are upcast; say so (the report records weight_dtypes)."""
    from ..text import err

    if quiet:
        return
    for note in getattr(subject.checkpoint, "notes", ()):
        err(f"fadiag: warning: {subject.path}: {note}")
    half = [d for d in subject.weight_dtypes if d in ("float16", "bfloat16")]
    if half:
        err(f"fadiag: warning: {subject.path}: {', '.join(half)} weights; fadiag computes in float32 "
            "(norms, cosines and correlations in float64), so small gradients are not flushed to zero")


def bar(progress, label: str):
    import contextlib

    return progress(label) if progress else contextlib.nullcontext(None)


def runtime_info(threads: int) -> dict:
    return {"threads": int(threads)}


def apply_threads(requested: int | None = None) -> dict:
    """Set torch's threads for a small-model command; the report's ``runtime`` entry."""
    return runtime_info(set_threads(choose_threads(requested)))


def one(kind: str, path: str, opts: dict, progress=None) -> tuple:
    """One checkpoint in this process: (its typed report, the body's extra result). Errors propagate.
    Threads: opts["threads"] (--threads), else OMP_NUM_THREADS, else every core for a model whose batch pass
    is large (choose_threads(macs=...)) and 1 otherwise; recorded under ``runtime``."""
    set_threads(choose_threads(opts.get("threads")))  # the loader raises it for a large model (load_subject)
    from ..registry import body

    rep, extra = body(kind)(path, opts, progress)
    import torch

    return (rep if rep.runtime is not None else rep.replace(runtime=runtime_info(torch.get_num_threads()))), extra


def run_one(kind: str, path: str, opts: dict, progress=None, capture: bool = True) -> dict:
    """One checkpoint, for the wire: {"ok": True, "report": report.to_dict(), "stderr": str} or {"ok": False,
    "exit_code", "error", "stderr"}. What the command would write to stderr is captured (``capture``), so a
    worker's lines come back with its result; in-process, ``progress`` (label -> context manager giving a
    progress callback) draws bars."""
    buf, old = io.StringIO(), sys.stderr
    if capture:
        sys.stderr = buf
    try:
        rep, _ = one(kind, path, opts, progress)
        return {"ok": True, "report": rep.to_dict(), "stderr": buf.getvalue()}
    except FadiagError as e:
        return {"ok": False, "exit_code": e.exit_code, "error": str(e), "stderr": buf.getvalue()}
    except MemoryError:
        return {"ok": False, "exit_code": 2, "error": "out of memory; lower --batches/--batch-size/--row-chunk",
                "stderr": buf.getvalue()}
    except Exception as e:  # a bug: reported as exit 3 by the parent
        return {"ok": False, "exit_code": EXIT_INTERNAL, "stderr": buf.getvalue(), "internal": True,
                "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    finally:
        sys.stderr = old


#: where a sweep ran: never recorded in a report's settings (it cannot change a number, and the output must be
#: the same bytes whatever the backend)
BACKEND_OPTIONS = ("jobs", "resume", "scheduler")


class SweepError(FadiagError):
    """A checkpoint of a sweep failed: its message and exit code, as the one-checkpoint command gives them."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# -------------------------------------------------------------------------------------------- sweep

def _init_worker(threads: int) -> None:
    from .workers import watch_parent

    watch_parent()  # a worker never outlives the sweep
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _executor(jobs: int, threads: int):
    import concurrent.futures as cf
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    # forkserver/spawn: a worker never inherits a parent's OpenMP state (fork after torch can hang). The fork
    # server imports torch and fadiag once (it runs no torch op, so no OpenMP threads exist when it forks), and
    # every worker starts from that process instead of importing them itself.
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(WORKER_PRELOAD))
    else:
        ctx = mp.get_context("spawn")
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,))


#: what a --jobs worker's fork server imports before it forks (a module that fails to import is skipped)
WORKER_PRELOAD = ("torch", "numpy", "yaml", "fadiag.run.sweep", "fadiag.subject", "fadiag.spec", "fadiag.data",
                  "fadiag.models.presets", "fadiag.families.audit.api", "fadiag.families.credit.api", "fadiag.families.edges.api", "fadiag.families.relevance.api",
                  "fadiag.stream", "fadiag.models", "fadiag.models.resmlp", "fadiag.compat.biotorch",
                  "fadiag.reports", "fadiag.diagnostics.audit_quantities", "fadiag.diagnostics.protocol",
                  "fadiag.checkpoint", "fadiag.run._forkserver")


def dask_client(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise InputError(DASK_HINT, source="--scheduler") from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError(f"cannot reach the Dask scheduler at {address} ({type(e).__name__})",
                         source="--scheduler") from None


def run_sweep(kind: str, paths: Iterable[str], opts: dict, *, jobs: int = 1, scheduler=None,
              resume: str | None = None, on_report: Callable[[int, dict], None] | None = None,
              progress=None) -> list:
    """Reports for ``paths``, in input order, whatever the backend. ``on_report(i, report)`` is called in
    input order as soon as reports 0..i are all in (for streaming output); each worker's stderr lines are
    written as its result arrives. ``scheduler``: a dask.distributed address or Client. The first failure
    in input order is raised as a SweepError (after the reports before it were delivered)."""
    from ..registry import body

    body(kind)  # ValueError for a kind that is not a checkpoint family
    paths = [str(p) for p in paths]
    if resume and any(os.path.realpath(resume) == os.path.realpath(str(p)) for p in paths):
        raise InputError("is also a checkpoint of this sweep; refusing to append to it", source=f"--resume {resume}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= 1024:
        raise InputError(f"must be an integer in 1..1024, got {jobs!r}", source="--jobs")
    threads = choose_threads(opts.get("threads"))  # a worker's: --threads, else OMP_NUM_THREADS, else 1
    opts = dict(opts, threads=opts.get("threads"))  # in-process, None: chosen per checkpoint (load_subject)
    results: list = [None] * len(paths)
    keys, key, journal = [None] * len(paths), None, None
    if resume:
        done, torn = read_journal(resume)
        key = settings_key(kind, opts)
        if torn and not opts.get("quiet"):
            sys.stderr.write(f"fadiag: {resume}: dropped a torn last line (a sweep killed while writing it)\n")
        for i, p in enumerate(paths):
            keys[i] = checkpoint_key(p)
            rep = done.get((*keys[i], key))
            if rep is not None:
                results[i] = {"ok": True, "report": rep, "stderr": f"fadiag: {p}: already in {resume}; skipped\n"}
        journal = Journal(resume)
    nxt = 0

    def deliver(i: int, res: dict, fresh: bool) -> None:
        nonlocal nxt
        results[i] = res
        if res.get("stderr"):
            sys.stderr.write(res["stderr"])
            sys.stderr.flush()
        if fresh and journal is not None and res["ok"]:
            journal.write(res["report"], paths[i], keys[i], key)
        while nxt < len(paths) and results[nxt] is not None:
            r = results[nxt]
            if not r["ok"]:
                raise SweepError(r["error"], r["exit_code"])
            if on_report:
                on_report(nxt, r["report"])
            nxt += 1

    todo = [i for i in range(len(paths)) if results[i] is None]
    for i in range(len(paths)):  # resumed reports before any fresh one go out at once
        if results[i] is not None:
            r, results[i] = results[i], None
            deliver(i, r, False)
    try:
        if scheduler is not None:
            _sweep_dask(kind, paths, dict(opts, threads=threads), todo, scheduler, deliver)
        elif jobs == 1 or len(todo) <= 1:
            for i in todo:  # in-process: stderr live, with progress bars
                deliver(i, run_one(kind, paths[i], opts, progress, capture=False), True)
        else:
            import concurrent.futures as cf

            with _executor(min(jobs, len(todo)), threads) as ex:
                futs = {ex.submit(run_one, kind, paths[i], dict(opts, threads=threads)): i for i in todo}
                try:
                    for fut in cf.as_completed(futs):
                        deliver(futs[fut], fut.result(), True)
                except BaseException:
                    for f in futs:
                        f.cancel()
                    raise
    finally:
        if journal is not None:
            journal.close()
    return [r["report"] for r in results]


def _sweep_dask(kind, paths, opts, todo, scheduler, deliver) -> None:
    client = dask_client(scheduler) if isinstance(scheduler, str) else scheduler
    try:
        from distributed import as_completed
    except ImportError:
        raise InputError(DASK_HINT, source="--scheduler") from None
    try:
        futs = client.map(run_one, [kind] * len(todo), [paths[i] for i in todo], [opts] * len(todo), pure=False)
        index = {f.key: i for f, i in zip(futs, todo)}
        for fut, res in as_completed(futs, with_results=True):
            deliver(index[fut.key], res, True)
    finally:
        if isinstance(scheduler, str):
            client.close()
