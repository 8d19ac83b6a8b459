"""The residual-stream view of a model (docs/models.md, docs/science.md §1).

A :class:`Stream` names the residual stream of any ``nn.Module`` by module paths: the blocks (h_{l+1} is
what block l hands to block l+1), whether a block already adds its input (``inside``: timm, Hugging Face,
torchvision) or the model adds it (``outside``: fadiag's reference contract, h + block(h)), the index of
the stream in a block's tuple output, the readout, the token pooling and the loss. :class:`StreamView`
reads the stream through forward hooks, so the model's own forward runs unchanged:

- h_l (l < L) is the tensor block l consumes (a forward pre-hook on block l), h_L the last block's
  output (inside) or the readout's input (outside). The captured tensors are the ones in the graph, so
  ONE forward + backward gives h_0..h_L and g_l = d(mean loss)/dh_l.
- "the rest of the network from layer l with h_l replaced" (credit's ρ_l, Δ_l) is the same forward with
  a hook that substitutes the stream at layer l.
- :meth:`StreamView.double` is the float64 copy (credit, pitfall 3), with the same paths.

Per-sample vectors: ``pool`` turns a (B, T, d) state into (B, d): ``cls`` token 0, ``last`` token T-1,
``mean`` the mean over the tokens after ``prefix_tokens``, ``none`` flattened. A (B, ...) state that is not
(B, T, d) is flattened. The gradient of a pooled vector is the loss's derivative along the same embedding
(cls/last: that token's gradient; mean: the sum over the pooled tokens, the derivative of a shift applied
to all of them; none: flattened).

Parameter ``.grad`` buffers are never touched and every submodule's training mode is restored.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from .errors import SpecError

POOLS = ("cls", "mean", "last", "none")
RESIDUALS = ("auto", "inside", "outside")
LOSSES = ("ce", "lm", "mse")
CONTRACT = "model(x, return_hidden=True) -> (logits, [h_0..h_L])"
#: keyword names under which blocks receive the stream (Hugging Face: hidden_states)
_STREAM_KWARGS = ("hidden_states", "hidden_state", "x", "h", "input", "inputs")


@dataclass(frozen=True)
class Stream:
    """A resolved description of a model's residual stream (every path relative to the model)."""

    blocks: tuple
    """Block module paths, in order; h_{l+1} = what block l hands on."""
    embed: str | None = None
    """Module whose output is h_0 (needed for residual: outside; trained by the frozen baseline)."""
    residual: str = "auto"
    output_index: int = 0
    readout: object = "model"
    """Tuple of module paths applied after the last block, or "model" (the model's own forward)."""
    pool: str = "cls"
    prefix_tokens: int = 0
    """Tokens before the pooled ones (pool: mean skips them: timm's num_prefix_tokens)."""
    loss: str = "ce"
    source: str = "spec"
    """Where the description came from: "spec", "preset: <family>", "auto: ...", "reference contract"."""
    notes: tuple = field(default_factory=tuple)

    def describe(self) -> dict:
        token = {"cls": "token 0 (class token)", "last": "the last token", "mean": "the mean over tokens"
                 + (f" after {self.prefix_tokens} prefix token(s)" if self.prefix_tokens else ""),
                 "none": "the whole state, flattened"}[self.pool]
        blocks = list(self.blocks)
        return {"source": self.source, "embed": self.embed, "blocks": _compact(blocks), "n_blocks": len(blocks),
                "residual": self.residual, "output_index": self.output_index,
                "readout": self.readout if isinstance(self.readout, str) else list(self.readout),
                "pool": self.pool, "token": token + " for token states (B, T, d); (B, ...) states are flattened",
                "loss": self.loss, "notes": list(self.notes)}


def _compact(paths: list) -> str:
    """["blocks.0", "blocks.1"] -> "blocks.0..1"; mixed parents are listed."""
    if not paths:
        return ""
    heads = {p.rpartition(".")[0] for p in paths}
    if len(heads) == 1 and all(p.rpartition(".")[2].isdigit() for p in paths):
        h = heads.pop()
        return f"{h}.{paths[0].rpartition('.')[2]}..{paths[-1].rpartition('.')[2]}"
    return ", ".join(paths)


def _sub(model, path: str, what: str):
    try:
        return model.get_submodule(path) if path else model
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise SpecError(f"stream.{what}: the model has no module {path!r} (top-level modules: "
                        f"{', '.join(names[:12]) or 'none'})", source="stream") from None


def expand_blocks(model, blocks) -> tuple:
    """A path (or list of paths) -> block paths: a ModuleList/Sequential stands for its children."""
    paths = [blocks] if isinstance(blocks, str) else list(blocks or [])
    out = []
    for p in paths:
        if not isinstance(p, str):
            raise SpecError(f"stream.blocks: expected module paths, got {p!r}", source="stream")
        m = _sub(model, p, "blocks")
        if isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential)):
            out += [f"{p}.{n}" if p else n for n, _ in m.named_children()]
        else:
            out.append(p)
    if not out:
        raise SpecError("stream.blocks: no blocks (an empty ModuleList?)", source="stream")
    return tuple(out)


def logits_of(out):
    """A model's output -> the logits tensor: a tensor, a Hugging Face output's .logits, or a tuple's first."""
    if isinstance(out, torch.Tensor):
        return out
    lg = getattr(out, "logits", None)
    if isinstance(lg, torch.Tensor):
        return lg
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise SpecError(f"the model returned {type(out).__name__}, not logits (a tensor, .logits, or a tuple)",
                    source="model.arch")


def per_sample_loss(logits, y, loss: str):
    """(B,) per-sample loss in float64. ce: cross-entropy; lm: next-token CE, mean over each row's labelled
    positions (label -100 = ignored); mse: mean squared error over each row's outputs."""
    z = logits.double()
    if loss == "ce":
        if z.dim() != 2:
            raise SpecError(f"loss: ce needs (B, classes) logits, the model gives {tuple(z.shape)} "
                            "(loss: lm for a language model)", source="loss")
        return F.cross_entropy(z, y, reduction="none")
    if loss == "lm":
        if z.dim() != 3 or y.dim() != 2 or y.shape[:2] != z.shape[:2]:
            raise SpecError(f"loss: lm needs (B, T, vocab) logits and (B, T) labels, got {tuple(z.shape)} and "
                            f"{tuple(y.shape)}", source="loss")
        zz, yy = z[:, :-1], y[:, 1:]
        ce = F.cross_entropy(zz.reshape(-1, zz.shape[-1]), yy.reshape(-1), reduction="none", ignore_index=-100)
        ce = ce.view(yy.shape)
        n = (yy != -100).sum(1)
        return ce.sum(1) / n.clamp(min=1)
    t = y.double().reshape(z.shape) if y.numel() == z.numel() else y.double()
    return ((z - t) ** 2).flatten(1).mean(1)


def accuracy(logits_list: list, y_list: list, loss: str = "ce") -> float:
    """Classification accuracy; for loss lm, next-token accuracy over the labelled positions."""
    correct = total = 0
    for lg, y in zip(logits_list, y_list):
        if loss == "lm":
            pred, yy = lg[:, :-1].argmax(-1), y[:, 1:]
            keep = yy != -100
            correct += int((pred[keep] == yy[keep]).sum())
            total += int(keep.sum())
        else:
            correct += int((lg.argmax(-1) == y).sum())
            total += int(y.numel())
    return correct / total if total else float("nan")


def _stream_arg(args, kwargs):
    """Where a block receives the stream: ("arg", 0) or ("kw", name)."""
    if args and isinstance(args[0], torch.Tensor):
        return "arg", 0
    for k in _STREAM_KWARGS:
        if isinstance(kwargs.get(k), torch.Tensor):
            return "kw", k
    raise SpecError("a block was called without a tensor argument fadiag can read as the stream",
                    source="stream.blocks")


def _get_arg(args, kwargs):
    kind, k = _stream_arg(args, kwargs)
    return args[k] if kind == "arg" else kwargs[k]


def _set_arg(args, kwargs, new):
    kind, k = _stream_arg(args, kwargs)
    if kind == "arg":
        return (new, *args[1:]), kwargs
    return args, {**kwargs, k: new}


class StreamView:
    """A model seen through its residual stream (see the module docstring)."""

    def __init__(self, model, stream: Stream):
        if stream.pool not in POOLS:
            raise SpecError(f"stream.pool: expected one of {', '.join(POOLS)}, got {stream.pool!r}", source="stream")
        if stream.residual not in RESIDUALS:
            raise SpecError(f"stream.residual: expected inside, outside or auto, got {stream.residual!r}",
                            source="stream")
        if stream.loss not in LOSSES:
            raise SpecError(f"loss: expected one of {', '.join(LOSSES)}, got {stream.loss!r}", source="loss")
        self.model, self.stream = model, stream
        self.settled = False
        """True once the first batch has checked residual inside/outside (check_residual)."""
        self.blocks = [_sub(model, p, "blocks") for p in stream.blocks]
        self.embed = _sub(model, stream.embed, "embed") if stream.embed else None
        ro = stream.readout
        self.readout = None if ro == "model" else [_sub(model, p, "readout") for p in ro]

    @property
    def n(self) -> int:
        """L + 1: the number of stream states h_0..h_L."""
        return len(self.blocks) + 1

    def double(self) -> "StreamView":
        v = StreamView(copy.deepcopy(self.model).double().eval(), self.stream)
        v.settled = self.settled
        return v

    def with_residual(self, residual: str, note: str | None = None, **kw) -> "StreamView":
        notes = self.stream.notes + ((note,) if note else ())
        v = StreamView(self.model, replace(self.stream, residual=residual, notes=notes, **kw))
        v.settled = True
        return v

    def find_embed(self, x) -> str:
        """The module whose output is the very tensor block 0 consumes (outside residual needs it for l = 0)."""
        seen: dict = {}
        found: list = []
        skip = tuple(p + "." for p in self.stream.blocks)
        def post(name):
            def f(m, a, o):
                if isinstance(o, torch.Tensor):
                    seen[id(o)] = (name, o)  # the last module to return this tensor produced it (kept alive: ids stay unique)
            return f

        def pre(m, a, k):
            if not found:
                found.append(seen.get(id(_get_arg(a, k)), (None,))[0])

        handles = [m.register_forward_hook(post(n)) for n, m in self.model.named_modules()
                   if n and not n.startswith(skip) and n not in self.stream.blocks]
        handles.append(self.blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
        try:
            self.call(x)
        finally:
            for h in handles:
                h.remove()
        if not found or found[0] is None:
            raise SpecError("stream.residual: outside needs stream.embed (the module whose output is h_0); no module's "
                            "output is what the first block consumes", source="stream")
        return found[0]

    # -- calling the model -------------------------------------------------------------------------
    def call(self, x):
        with contextlib.redirect_stdout(sys.stderr):  # a model's print() must not corrupt JSON on stdout
            return logits_of(self.model(x))

    def _out(self, o):
        return o[self.stream.output_index] if isinstance(o, (tuple, list)) else o

    def _with_out(self, o, new):
        if isinstance(o, (tuple, list)):
            o = list(o)
            o[self.stream.output_index] = new
            return tuple(o)
        return new

    def _hooks(self, pre: dict, post: dict, readout_pre=None):
        """Install pre-hooks {block index: fn(args, kwargs)} and forward hooks {index: fn(input, output)}."""
        hs = []
        for i, fn in pre.items():
            hs.append(self.blocks[i].register_forward_pre_hook(lambda m, a, k, fn=fn: fn(a, k), with_kwargs=True))
        for i, fn in post.items():
            mod = self.embed if i == "embed" else self.blocks[i]
            hs.append(mod.register_forward_hook(lambda m, a, k, o, fn=fn: fn(a, k, o), with_kwargs=True))
        if readout_pre is not None:
            hs.append(self.readout[0].register_forward_pre_hook(lambda m, a: readout_pre(a)))
        return hs

    def capture(self, x):
        """The model's forward with hooks: (logits, [h_0..h_L], [(in_l, out_l) per block]) in the graph."""
        L = len(self.blocks)
        hs: list = [None] * (L + 1)
        io: list = [None] * L
        outside = self.stream.residual == "outside"

        def pre(i):
            def f(a, k):
                if hs[i] is None:
                    hs[i] = _get_arg(a, k)
            return f

        def post(i):
            def f(a, k, o):
                if io[i] is None:
                    io[i] = (_get_arg(a, k), self._out(o))
                if i == L - 1 and hs[L] is None and not (outside and self.readout):
                    if outside:  # the stream the model will form, as a graph tensor: h + f = h + ((h + f) - h)
                        h_in = _get_arg(a, k)
                        hs[L] = h_in + self._out(o)
                        return self._with_out(o, hs[L] - h_in)
                    hs[L] = self._out(o)
            return f

        def ro_pre(a):
            if hs[L] is None and a and isinstance(a[0], torch.Tensor):
                hs[L] = a[0]

        handles = self._hooks({i: pre(i) for i in range(L)}, {i: post(i) for i in range(L)},
                              ro_pre if (outside and self.readout) else None)
        try:
            logits = self.call(x)
        finally:
            for h in handles:
                h.remove()
        missing = [self.stream.blocks[i] for i in range(L) if hs[i] is None]
        if missing or hs[L] is None:
            what = f"block(s) {_compact(missing)} were" if missing else "the readout was"
            raise SpecError(f"stream: {what} not run by the model's forward (check stream.blocks / readout)",
                            source="stream")
        return logits, hs, io

    def check_residual(self, io, hs) -> "StreamView":
        """First batch: does block l's output already contain its input? Compare what block l+1 consumes with
        out_l (inside) and in_l + out_l (outside). A declared residual the data contradicts is bad input."""
        ev = set()
        for l in range(len(io) - 1):
            (hin, out), nxt = io[l], io[l + 1][0]
            if out.shape != nxt.shape or hin.shape != out.shape:
                if out.shape == nxt.shape and torch.equal(out, nxt):
                    ev.add("inside")
                continue
            if not all(bool(torch.isfinite(t).all()) for t in (hin, out, nxt)):
                continue  # NaN/Inf tell nothing here; (e) reports them
            scale = float(nxt.detach().abs().max()) or 1.0
            tol = 1e-5 * scale if nxt.dtype != torch.float64 else 1e-12 * scale
            ins = bool((out.detach() - nxt.detach()).abs().max() <= tol)
            outs = bool((hin.detach() + out.detach() - nxt.detach()).abs().max() <= tol)
            if ins != outs:
                ev.add("inside" if ins else "outside")
            elif not ins:
                ev.add("neither")
        declared = self.stream.residual
        if "neither" in ev or len(ev - {"neither"}) > 1:
            raise SpecError("stream: what block l+1 consumes is neither block l's output nor its input plus its "
                            "output; stream.blocks does not name the residual stream", source="stream")
        found = next(iter(ev), None)
        if found and declared not in ("auto", found):
            raise SpecError(f"stream.residual: {declared}, but on the first batch each block's output "
                            f"{'already contains' if found == 'inside' else 'does not contain'} its input: the "
                            f"residual is added {found} the block (set residual: {found})", source="stream")
        if declared == "auto":
            return self.with_residual(found or "inside", f"residual {found or 'inside'}: "
                                      + ("measured on the first batch" if found else
                                         "assumed (no block pair could tell inside from outside)"))
        return self.with_residual(declared, f"residual {declared}: declared"
                                  + (", confirmed on the first batch" if found else ", not measurable"))

    # -- per-sample vectors ------------------------------------------------------------------------
    def _tok(self, h):
        return h.dim() == 3 and self.stream.pool != "none"

    def pool(self, h):
        if not self._tok(h):
            return h.reshape(h.shape[0], -1) if h.dim() != 2 else h
        p = self.stream.pool
        if p == "cls":
            return h[:, 0]
        if p == "last":
            return h[:, -1]
        return h[:, self.stream.prefix_tokens:].mean(1)

    def pool_grad(self, g):
        if self._tok(g) and self.stream.pool == "mean":
            return g[:, self.stream.prefix_tokens:].sum(1)
        return self.pool(g)

    def unpool(self, v, base):
        """Per-sample vectors (N, d) -> full states shaped like ``base`` repeated N/B times."""
        reps = v.shape[0] // base.shape[0]
        b = base.repeat(reps, *([1] * (base.dim() - 1))) if reps > 1 else base
        if not self._tok(base):
            return v.reshape(b.shape)
        p = self.stream.pool
        if p in ("cls", "last"):
            out = b.clone()
            out[:, 0 if p == "cls" else -1] = v
            return out
        k = self.stream.prefix_tokens
        out = b.clone()
        out[:, k:] = b[:, k:] + (v - b[:, k:].mean(1)).unsqueeze(1)
        return out

    # -- the rest of the network -------------------------------------------------------------------
    def rest_fn(self, layer: int, x, y, base):
        """fn(v: (N, d)) -> (N,) per-sample loss of the network run with h_layer replaced by unpool(v).
        The model's own forward runs on x repeated N/B times; a hook substitutes the stream at ``layer``."""
        L = len(self.blocks)
        B = x.shape[0]
        outside = self.stream.residual == "outside"

        def run(v):
            reps = v.shape[0] // B
            hh = self.unpool(v, base)
            rep = (lambda t: t.repeat(reps, *([1] * (t.dim() - 1)))) if reps > 1 else (lambda t: t)
            pre, post, ro = {}, {}, None
            if layer < L and not outside:
                pre[layer] = lambda a, k: _set_arg(a, k, hh)
            elif layer == 0:
                post["embed"] = lambda a, k, o: hh
            elif layer == L and outside and self.readout:
                ro = lambda a: (hh, *a[1:])  # noqa: E731
            elif outside:  # the model forms h_{l-1} + out: hand it hh - h_{l-1}
                post[layer - 1] = lambda a, k, o: self._with_out(o, hh - _get_arg(a, k))
            else:
                post[L - 1] = lambda a, k, o: self._with_out(o, hh)
            handles = self._hooks(pre, post, ro)
            try:
                logits = self.call(rep(x))
            finally:
                for h in handles:
                    h.remove()
            return per_sample_loss(logits, rep(y), self.stream.loss)

        return run


@dataclass
class StreamPass:
    """One batch through the stream. Tensors are detached, on the CPU, per-sample views (B, d)."""

    logits: torch.Tensor
    hiddens: list
    grads: list
    loss: float
    view: object = None
    shapes: list = field(default_factory=list)
    """The full shape of each h_l (before pooling), e.g. (B, C, H, W) per ResNet stage."""


def per_sample(h: torch.Tensor) -> torch.Tensor:
    """(B, d) as is; (B, T, d) -> the class token (B, d); (B, ...) else flattened (pool: cls)."""
    if h.dim() == 3:
        return h[:, 0]
    if h.dim() == 2:
        return h
    return h.flatten(1)


class _Modes:
    """Eval mode for the pass; every submodule's own mode restored on exit."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


def full_pass(view: StreamView, x, y, *, reduction: str = "mean"):
    """(logits, hs, grads, per-sample losses, io): ONE forward + backward; grads of the mean (or sum) loss
    with respect to the full states h_l. Runs under enable_grad; the caller restores modes."""
    with torch.enable_grad():
        if x.dtype.is_floating_point:
            # A leaf that requires grad puts every h_l in the graph even when all params are frozen.
            x = x.detach().clone().requires_grad_(True)
        logits, hs, io = view.capture(x)
        per = per_sample_loss(logits, y, view.stream.loss)
        loss = per.mean() if reduction == "mean" else per.sum()
        need = [h for h in hs if h.requires_grad]
        got = torch.autograd.grad(loss, need, allow_unused=True) if need and loss.requires_grad else []
        it = iter(got)
        grads = []
        for h in hs:
            g = next(it) if h.requires_grad else None
            grads.append(torch.zeros_like(h) if g is None else g)
    return logits.detach(), [h.detach() for h in hs], [g.detach() for g in grads], per.detach(), io


def settled_pass(view: StreamView, x, y, *, reduction: str = "mean"):
    """(view, full_pass results). An unsettled view is settled on this batch by the same pass (the residual
    check reads the blocks' inputs and outputs it captured); only when that changes what is captured
    (residual auto measured outside) does the batch run again."""
    res = full_pass(view, x, y, reduction=reduction)
    if view.settled:
        return view, res
    with torch.no_grad():
        v = _settle(view, res[4], res[1], x)
    if v.stream.residual == "outside" and view.stream.residual != "outside":
        res = full_pass(v, x, y, reduction=reduction)
    return v, res


def stream_pass(view, x: torch.Tensor, y: torch.Tensor, device: str = "cpu") -> StreamPass:
    """One batch: logits, pooled h_l and g_l = d(mean loss)/dh_l (loss in float64). ``pass.view`` is the view
    settled on this batch (residual inside/outside checked): pass it on to the next batch."""
    if not isinstance(view, StreamView):
        from .presets import resolve_view

        view = resolve_view(view)
    with _Modes(view.model):
        x, y = x.to(device), y.to(device)
        view, (logits, hs, grads, per, _) = settled_pass(view, x, y)
    return StreamPass(
        logits=logits.cpu(),
        hiddens=[view.pool(h).cpu() for h in hs],
        grads=[view.pool_grad(g).cpu() for g in grads],
        loss=float(per.mean()), view=view, shapes=[tuple(h.shape) for h in hs])


def _settle(view: StreamView, io, hs, x) -> StreamView:
    v = view.check_residual(io, hs)
    if v.stream.residual == "outside" and v.embed is None:
        e = v.find_embed(x)
        v = v.with_residual("outside", f"embed {e!r}: its output is what block 0 consumes (first batch)", embed=e)
    return v


def first_batch_view(view: StreamView, x, device: str = "cpu") -> StreamView:
    """Settle a view on a batch without the audit (one extra forward; no gradients are used)."""
    with _Modes(view.model), torch.no_grad():
        _, hs, io = view.capture(x.to(device))
        return _settle(view, io, hs, x.to(device))
