"""``fadiag inspect``: what a checkpoint holds, read safely, without building a model or running its code.

Report schema "fadiag.inspect/2" (docs/json.md): the tensors (key path, shape, dtype, element count, non-finite count),
parameter total, where the state dict sits, whether a spec is embedded, the non-tensor entries, and
whether the file needs arbitrary unpickling (then the offending globals, each classed as dangerous /
allowed by torch / unknown, and nothing else is read). Flags: (unsafe) needs arbitrary unpickling;
(nonfinite) NaN/Inf in some tensor; (fp16) half-precision weights, float16 or bfloat16 (small-magnitude
metrics are computed in float32/64 anyway; docs/science.md, pitfall 3); (archive) a torch zip with duplicate
or extra pickle members; (unchecked) part of the file was not looked at (a budget below was reached).

inspect never imports code and works under fixed budgets (docs/safety.md): the walk visits at most
MAX_VISITS container elements (shared references count each time they are reached, so a "billion laughs"
list stops early), lists at most MAX_LISTED tensors and other entries (the rest are still counted), and
reads at most MAX_TOUCH tensor elements in all to count non-finite values, in chunks of CHUNK elements.
A view whose strides overlap (a stride of 0) is counted over the storage it reads, never expanded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import __version__
from ...checkpoint import find_state_dict, read_checkpoint, sha256_file, sniff_format, tensor_kind
from ...errors import CheckpointError, UnsafeCheckpointError
from ...reports import Flag
from .report import InspectReport

INSPECT_SCHEMA = InspectReport.SCHEMA
#: The flag a file that needs arbitrary unpickling raises (refused, or loaded under --trust-checkpoint).
UNSAFE, UNSAFE_NAME = "unsafe", "needs arbitrary unpickling"
MAX_LISTED = 2000
MAX_VISITS = 200_000
MAX_DEPTH = 12
MAX_TOUCH = 2**31
CHUNK = 1 << 20
CLASS_WORDS = {"dangerous": "dangerous", "allowed": "allowed by torch", "unknown": "unknown"}


# ----------------------------------------------------------------------------------- non-finite counts

def _count_chunk(c) -> int:
    import torch

    try:
        return int((~torch.isfinite(c)).sum())
    except (NotImplementedError, RuntimeError):  # float8 and other exotic dtypes: count in float32
        return int((~torch.isfinite(c.to(torch.float32))).sum())


def _blocks(t):
    """Views of ``t`` of at most CHUNK elements each, covering it once (no copy of ``t`` is made)."""
    if t.numel() <= CHUNK or t.dim() == 0:
        yield t
        return
    inner = t.numel() // t.shape[0]
    if inner >= CHUNK:
        for i in range(t.shape[0]):
            yield from _blocks(t[i])
    else:
        step = max(1, CHUNK // inner)
        for i in range(0, t.shape[0], step):
            yield t[i:i + step]


def _layout(t) -> tuple:
    """(non_overlapping, span): whether no two elements share storage, and how many storage elements the
    view reaches (from its first to its last element)."""
    dims = sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz > 1)
    ok, span = True, 1
    for st, sz in dims:  # innermost first: each stride must step past everything the inner dims reach
        ok = ok and st >= span
        span += (sz - 1) * st
    return ok, span


class _Counter:
    """Non-finite counts under one element budget for the whole file; a tensor reached twice is counted once."""

    def __init__(self, budget: int = MAX_TOUCH):
        self.left = budget
        self.memo: dict = {}

    def count(self, t) -> tuple:
        """(non-finite count or None, note or None)."""
        key = id(t)
        if key not in self.memo:
            self.memo[key] = (t, self._count(t))  # keep t alive so its id stays unique
        return self.memo[key][1]

    def _dense(self, t, what: str = "") -> tuple:
        if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            return 0, None
        ok, span = _layout(t)
        cost = t.numel() if ok else span
        if cost > self.left:
            return None, f"not counted: over the {MAX_TOUCH:,}-element budget for the file"
        self.left -= cost
        if ok and span == t.numel():
            flat = t.as_strided((span,), (1,), t.storage_offset())
            return sum(_count_chunk(flat[i:i + CHUNK]) for i in range(0, span, CHUNK)), None
        if ok:
            return sum(_count_chunk(b) for b in _blocks(t)), None
        flat = t.as_strided((span,), (1,), t.storage_offset())
        n = sum(_count_chunk(flat[i:i + CHUNK]) for i in range(0, span, CHUNK))
        return n, (f"overlapping view (a stride of 0 or overlapping strides): counted over the {span:,} storage "
                   f"element(s) it reads{what}")

    def _count(self, t) -> tuple:
        kind = tensor_kind(t)
        try:
            if kind == "meta":
                return None, "meta tensor: holds no values"
            if kind == "nested":
                total, notes = 0, []
                for c in t.unbind():
                    n, note = self._dense(c)
                    if n is None:
                        return None, note
                    total += n
                return total, None
            if kind and kind.startswith("sparse"):
                vals = t._values() if kind == "sparse_coo" else t.values()
                n, note = self._dense(vals)
                return n, note or f"{kind}: counted over its {vals.numel():,} stored value(s)"
            if kind == "quantized":
                return 0, "quantized: integer values"
            return self._dense(t)
        except Exception as e:  # an exotic tensor torch cannot view: say so rather than fail
            return None, f"not counted ({type(e).__name__})"


# ----------------------------------------------------------------------------------------- the walk

def _short_repr(obj) -> str:
    """repr bounded in time and memory: strings and bytes are cut before repr, big ints are described."""
    import reprlib

    if isinstance(obj, (str, bytes, bytearray)):
        r = repr(obj[:80]) + (f" ... ({len(obj):,} long)" if len(obj) > 80 else "")
    elif isinstance(obj, int) and not isinstance(obj, bool) and obj.bit_length() > 256:
        r = f"<int of {obj.bit_length():,} bits>"
    else:
        rr = reprlib.Repr()
        rr.maxlevel, rr.maxlist, rr.maxtuple, rr.maxdict, rr.maxset, rr.maxstring, rr.maxother = 2, 8, 8, 6, 8, 60, 60
        try:
            r = rr.repr(obj)
        except Exception as e:  # a repr that fails is still an entry
            r = f"<{type(obj).__name__}: repr failed ({type(e).__name__})>"
    return r if len(r) <= 80 else r[:77] + "..."


def _key(k) -> str:
    return k if isinstance(k, str) else _short_repr(k)


class _Walk:
    def __init__(self):
        self.tensors: list = []
        self.others: list = []
        self.n_tensors = self.n_elements = self.nonfinite = self.nonfinite_tensors = 0
        self.unchecked: list = []
        self.omitted_tensors = self.omitted_others = 0
        self.visits = 0
        self.stopped = False
        self.counter = _Counter()
        self.dtypes: set = set()
        self._has_children: dict = {}

    def other(self, entry: dict) -> None:
        if len(self.others) < MAX_LISTED:
            self.others.append(entry)
        else:
            self.omitted_others += 1

    def tensor(self, key: str, t) -> None:
        n, note = self.counter.count(t)
        kind = tensor_kind(t)
        try:
            shape = [len(t.unbind())] if kind == "nested" else list(t.shape)
            numel = int(t.numel()) if kind != "nested" else sum(int(c.numel()) for c in t.unbind())
        except Exception:
            shape, numel = [], 0
        dtype = str(t.dtype).replace("torch.", "")
        self.dtypes.add(dtype)
        self.n_tensors += 1
        self.n_elements += numel
        if n is None:
            self.unchecked.append(key)
        elif n:
            self.nonfinite += n
            self.nonfinite_tensors += 1
        if kind == "nested":
            note = f"nested tensor of {shape[0]} component(s)" + (f"; {note}" if note else "")
        if len(self.tensors) < MAX_LISTED:
            entry = {"key": key, "shape": shape, "dtype": dtype, "numel": numel, "nonfinite": n}
            if note:
                entry["note"] = note
            self.tensors.append(entry)
        else:
            self.omitted_tensors += 1

    def _children(self, obj):
        import torch

        if isinstance(obj, dict):
            return iter(obj.items()), True
        if isinstance(obj, (list, tuple)):
            key = id(obj)
            if key not in self._has_children:  # scanned once per object (a shared list is reached many times)
                self.visits += len(obj)
                self._has_children[key] = (obj, any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in obj))
            if self._has_children[key][1]:
                return iter(enumerate(obj)), False
        return None, False

    def run(self, root: Any) -> None:
        import torch

        stack = [(iter([("", root)]), "", True, 0)]
        while stack:
            it, prefix, is_dict, depth = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                continue
            self.visits += 1
            if self.visits > MAX_VISITS:
                self.stopped = True
                # always listed, past MAX_LISTED too
                self.others.append({"key": prefix or "(top)", "type": "(walk stopped)",
                            "value": f"visit budget of {MAX_VISITS:,} container elements reached; the rest is "
                                     "not listed"})
                return
            k, obj = nxt
            if depth == 0:
                key = ""
            elif is_dict:
                key = f"{prefix}.{_key(k)}" if prefix else _key(k)
            else:
                key = f"{prefix}[{k}]"
            if isinstance(obj, torch.Tensor):
                self.tensor(key, obj)
                continue
            children, child_is_dict = self._children(obj)
            if children is not None:
                if depth >= MAX_DEPTH:
                    self.other({"key": key, "type": "(nested too deep)"})
                    continue
                stack.append((children, key, child_is_dict, depth + 1))
                continue
            if len(self.others) < MAX_LISTED:  # the repr only for what is listed
                self.other({"key": key, "type": type(obj).__name__, "value": _short_repr(obj)})
            else:
                self.omitted_others += 1


# -------------------------------------------------------------------------------------------- report

def _classified(classes: dict) -> list:
    return [{"name": n, "class": CLASS_WORDS.get(c, c)} for n, c in classes.items()]


def _globals_detail(classes: dict, names: list) -> str:
    by: dict = {}
    for n in names or list(classes):
        by.setdefault(CLASS_WORDS.get(classes.get(n, "unknown"), "unknown"), []).append(n)
    return "; ".join(f"{c}: {', '.join(v[:6])}{' ...' if len(v) > 6 else ''}" for c, v in by.items())


def _refused(path: str, e: UnsafeCheckpointError) -> InspectReport:
    what = _globals_detail(e.classes, e.globals) or "none named"
    reason = f"{e.reason}; " if e.reason else ""
    flag = Flag(UNSAFE, UNSAFE_NAME, True, float(len(e.globals)), 0.0, f"{reason}globals: {what}; not loaded")
    return InspectReport(
        fadiag_version=__version__,
        checkpoint={"path": path, "sha256": sha256_file(path), "format": sniff_format(Path(path)), "trusted": False},
        needs_unsafe_unpickling=True, unsafe_globals=list(e.globals), globals=_classified(e.classes),
        refusal=str(e), tensors=[], other_entries=[], n_tensors=0, n_elements=0, state_dict_key=None,
        embedded_spec=False, flags=(flag,))


def _flags(raw, w: _Walk) -> tuple:
    half = sorted(d for d in w.dtypes if d in ("float16", "bfloat16"))
    gaps = []
    if w.stopped:
        gaps.append(f"the walk stopped at its budget of {MAX_VISITS:,} visits")
    if w.unchecked:
        gaps.append(f"{len(w.unchecked)} tensor(s) not checked for NaN/Inf ({', '.join(w.unchecked[:3])}"
                    f"{' ...' if len(w.unchecked) > 3 else ''})")
    return (
        Flag(UNSAFE, UNSAFE_NAME, bool(raw.trusted), 0.0, 0.0,
             "loaded with --trust-checkpoint" if raw.trusted else "read without unpickling code"),
        Flag("nonfinite", "non-finite values in tensors", w.nonfinite > 0, float(w.nonfinite), 0.0,
             f"{w.nonfinite} NaN/Inf value(s) in {w.nonfinite_tensors} tensor(s)"),
        Flag("fp16", "half-precision weights", bool(half), float(len(half)), 0.0,
             f"{', '.join(half)} tensors: metrics are computed in float32/64 anyway" if half
             else "no float16/bfloat16 tensors"),
        Flag("archive", "duplicate or extra pickle members", bool(raw.anomalies), float(len(raw.anomalies)), 0.0,
             "; ".join(raw.anomalies) if raw.anomalies else "none (or not a zip)"),
        Flag("unchecked", "parts of the file not checked", bool(gaps), float(len(w.unchecked)), 0.0,
             "; ".join(gaps) if gaps else "every tensor checked"),
    )


def inspect_checkpoint(path: str, *, trust: bool = False) -> InspectReport:
    try:
        raw = read_checkpoint(path, trust=trust, strict=False)
    except UnsafeCheckpointError as e:
        return _refused(path, e)
    w = _Walk()
    content = raw.content
    try:
        import torch

        if isinstance(content, torch.nn.Module):  # torch.save(model), loaded under --trust-checkpoint
            content = dict(content.state_dict())
    except Exception:
        pass
    w.run(content)
    try:
        _, key = find_state_dict(content, source=path, dense=False)
    except CheckpointError:
        key = None
    return InspectReport(
        fadiag_version=__version__, checkpoint=raw.describe(), needs_unsafe_unpickling=bool(raw.trusted),
        unsafe_globals=[], globals=_classified(dict(raw.globals)), tensors=w.tensors, other_entries=w.others,
        n_tensors=w.n_tensors, n_elements=w.n_elements, tensors_not_listed=w.omitted_tensors,
        entries_not_listed=w.omitted_others, visits=w.visits, state_dict_key=key,
        embedded_spec=isinstance(raw.content, dict) and isinstance(raw.content.get("fadiag_spec"), dict),
        archive_anomalies=list(raw.anomalies), flags=_flags(raw, w))
