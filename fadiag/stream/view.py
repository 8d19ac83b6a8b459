""":class:`StreamView`: a model read through its residual stream by forward hooks (docs/models.md).

The model's own forward always runs; hooks read the stream (``capture``), substitute it at one layer
(``rest_fn``: the rest of the network from layer l), or cut the graph between blocks (``local_forward``:
what DFA training backpropagates through). ``double()`` is the float64 copy credit computes on (pitfall 3).
"""

from __future__ import annotations

import contextlib
import copy
import sys
from dataclasses import replace

import torch

from ..errors import SpecError
from .mask import last_index, mask_of, masked_labels, model_inputs
from .spec import (LOSSES, POOLS, RESIDUALS, Stream, _compact, _sub, logits_of, per_sample_loss, pool_state,
                   token_weights)

#: keyword names under which blocks receive the stream (Hugging Face: hidden_states)
_STREAM_KWARGS = ("hidden_states", "hidden_state", "x", "h", "input", "inputs")


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
        self.mask = None
        """The attention mask (B, T) of the batch the view is bound to (for_batch), or None."""
        self.probe = None
        """stream.readout probe: the fitted torch.nn.Linear on pooled h_L (fadiag.stream.probe), or None."""
        self.blocks = [_sub(model, p, "blocks") for p in stream.blocks]
        self.embed = _sub(model, stream.embed, "embed") if stream.embed else None
        ro = stream.readout
        self.readout = None if ro == "model" else [_sub(model, p, "readout") for p in ro]

    @property
    def n(self) -> int:
        """L + 1: the number of stream states h_0..h_L."""
        return len(self.blocks) + 1

    def _like(self, model, stream, settled: bool) -> "StreamView":
        v = StreamView(model, stream)
        v.settled, v.mask, v.probe = settled, self.mask, self.probe
        return v

    def double(self) -> "StreamView":
        v = self._like(copy.deepcopy(self.model).double().eval(), self.stream, self.settled)
        v.probe = None if self.probe is None else copy.deepcopy(self.probe).double()
        return v

    def with_residual(self, residual: str, note: str | None = None, **kw) -> "StreamView":
        notes = self.stream.notes + ((note,) if note else ())
        return self._like(self.model, replace(self.stream, residual=residual, notes=notes, **kw), True)

    def for_batch(self, x) -> "StreamView":
        """The view bound to batch x's attention mask (fadiag.stream.mask; None: no mask): what pool, pool_grad
        and unpool read. The view itself when nothing changes."""
        m = mask_of(x)
        if m is None and self.mask is None:
            return self
        v = self._like(self.model, replace(self.stream, masked=m is not None), self.settled)
        v.mask = m
        return v

    def find_embed(self, x, found: list | None = None) -> str:
        """The module whose output is the very tensor block 0 consumes (outside residual needs it for l = 0):
        from ``found`` when a forward already ran under :meth:`embed_probe`, else from a forward on x."""
        if found is None:
            with self.embed_probe() as found:
                self.call(x)
        if not found or found[0] is None:
            raise SpecError("stream.residual: outside needs stream.embed (the module whose output is h_0); no module's "
                            "output is what the first block consumes", source="stream")
        return found[0]

    @contextlib.contextmanager
    def embed_probe(self):
        """Hooks for :meth:`find_embed` during whatever forward runs inside: yields a list that receives the name
        of the module whose output block 0 consumed (None: no module's)."""
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
            yield found
        finally:
            for h in handles:
                h.remove()
            seen.clear()

    # -- calling the model -------------------------------------------------------------------------
    def call(self, x):
        """The model's logits on x (with ``attention_mask=`` when x carries one, fadiag.stream.mask): its own
        output, or (stream.logits_from readout / probe) made from h_L (fadiag.stream.readings.final_state)."""
        args, kw = model_inputs(self.model, x)
        if self.stream.logits_from == "model":
            with contextlib.redirect_stdout(sys.stderr):  # a model's print() must not corrupt JSON on stdout
                return logits_of(self.model(*args, **kw))
        from .readings import final_state, head_of

        return head_of(self, final_state(self, args, kw), x)

    def loss_of(self, logits, x, y):
        """(B,) per-sample loss in float64 (spec.per_sample_loss); loss lm ignores x's pad positions."""
        return per_sample_loss(logits, masked_labels(y, x, self.stream.loss), self.stream.loss,
                               bool(self.stream.labels_shifted))

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
        apps: dict = {}  # a module applied several times (ALBERT's shared layer): its k-th call is block apps[k]
        for i, b in enumerate(self.blocks):
            apps.setdefault(id(b), []).append(i)
        for idx in (v for v in apps.values() if len(v) > 1):
            hs += self._shared_hooks(self.blocks[idx[0]], idx, pre, post)
        for i, fn in pre.items():
            if len(apps[id(self.blocks[i])]) == 1:
                hs.append(self.blocks[i].register_forward_pre_hook(lambda m, a, k, fn=fn: fn(a, k), with_kwargs=True))
        for i, fn in post.items():
            if i != "embed" and len(apps[id(self.blocks[i])]) > 1:
                continue
            mod = self.embed if i == "embed" else self.blocks[i]
            hs.append(mod.register_forward_hook(lambda m, a, k, o, fn=fn: fn(a, k, o), with_kwargs=True))
        if readout_pre is not None:
            hs.append(self.readout[0].register_forward_pre_hook(lambda m, a: readout_pre(a)))
        return hs

    @staticmethod
    def _shared_hooks(mod, idx: list, pre: dict, post: dict) -> list:
        """One pre- and one forward hook on a module that is blocks idx[0], idx[1], ... in turn: its k-th call
        (counted from when the hooks are installed, modulo len(idx)) runs pre/post of block idx[k]."""
        k = [-1]

        def p(m, a, kw):
            k[0] += 1
            fn = pre.get(idx[k[0] % len(idx)])
            return fn(a, kw) if fn else None

        def q(m, a, kw, o):
            fn = post.get(idx[k[0] % len(idx)])
            return fn(a, kw, o) if fn else None

        return [mod.register_forward_pre_hook(p, with_kwargs=True), mod.register_forward_hook(q, with_kwargs=True)]

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
        declared, assumed = self.stream.residual, "inside"
        if self.stream.residual_from != "spec" and declared != "auto":  # a preset's guess: measured like auto
            declared, assumed = "auto", declared
        if "neither" in ev or len(ev - {"neither"}) > 1:
            raise SpecError("stream: what block l+1 consumes is neither block l's output nor its input plus its "
                            "output; stream.blocks does not name the residual stream", source="stream")
        found = next(iter(ev), None)
        if found and declared not in ("auto", found):
            raise SpecError(f"stream.residual: {declared}, but on the first batch each block's output "
                            f"{'already contains' if found == 'inside' else 'does not contain'} its input: the "
                            f"residual is added {found} the block (set residual: {found})", source="stream")
        if declared == "auto":
            return self.with_residual(found or assumed, f"residual {found or assumed}: "
                                      + ("measured on the first batch" if found else
                                         "assumed (no block pair could tell inside from outside)"))
        return self.with_residual(declared, f"residual {declared}: declared"
                                  + (", confirmed on the first batch" if found else ", not measurable"))

    # -- per-sample vectors ------------------------------------------------------------------------
    def _tok(self, h):
        return h.dim() == 3 and self.stream.pool != "none"

    def pool(self, h):
        """The per-sample vector of a state (B, ...) -> (B, d): the stream's token pooling (spec.pool_state)."""
        return pool_state(h, self.stream.pool, self.stream.prefix_tokens, self.mask)

    def pool_grad(self, g):
        if self._tok(g) and self.stream.pool == "mean":
            k = self.stream.prefix_tokens
            w = token_weights(g, self.mask, k)
            return g[:, k:].sum(1) if w is None else (g[:, k:] * w).sum(1)  # masked: the pad tokens do not shift
        return self.pool(g)

    def unpool(self, v, base):
        """Per-sample vectors (N, d) -> full states shaped like ``base`` repeated N/B times."""
        reps = v.shape[0] // base.shape[0]
        b = base.repeat(reps, *([1] * (base.dim() - 1))) if reps > 1 else base
        if not self._tok(base):
            return v.reshape(b.shape)
        p, k = self.stream.pool, self.stream.prefix_tokens
        m = self.mask.repeat(reps, 1) if self.mask is not None and reps > 1 else self.mask
        w = token_weights(b, m, k)
        out = b.clone()
        if p == "last" and w is not None:
            out[torch.arange(b.shape[0], device=b.device), last_index(m)] = v
        elif p in ("cls", "last"):
            out[:, 0 if p == "cls" else -1] = v
        else:
            shift = (v - pool_state(b, "mean", k, m)).unsqueeze(1)
            out[:, k:] = b[:, k:] + (shift if w is None else shift * w)
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
            return self.loss_of(logits, rep(x), rep(y))

        return run

    # -- the graph cut between blocks (DFA training) -----------------------------------------------
    def local_forward(self, x):
        """The model's forward with the graph cut before every block and before the readout (DFA training,
        docs/science.md §5): (logits, [h_0, u_0..u_{L-1}]). h_0 is the tensor block 0 consumes (in the graph back
        to the embedding), u_l block l's update of the stream (its output; minus its input for residual
        inside), in the graph back to block l's own parameters only. The readout reads a detached h_L, so a
        loss on the logits reaches only the readout. The view must be settled (residual inside or outside)."""
        L = len(self.blocks)
        res = self.stream.residual
        if res == "auto" or (res == "outside" and not self.readout):
            raise SpecError("local_forward needs residual inside, or outside with stream.readout modules "
                            f"(got residual {res!r}, readout {self.stream.readout!r})", source="stream")
        outs: list = [None] * (L + 1)

        def pre(i):
            def f(a, k):
                if i == 0:
                    outs[0] = _get_arg(a, k)
                return _set_arg(a, k, _get_arg(a, k).detach())
            return f

        def post(i):
            def f(a, k, o):
                out = self._out(o)
                outs[i + 1] = out - _get_arg(a, k) if res == "inside" else out
                return self._with_out(o, out.detach()) if i == L - 1 and res == "inside" else None
            return f

        ro = (lambda a: (a[0].detach(), *a[1:])) if res == "outside" else None
        handles = self._hooks({i: pre(i) for i in range(L)}, {i: post(i) for i in range(L)}, ro)
        try:
            logits = self.call(x)
        finally:
            for h in handles:
                h.remove()
        return logits, outs
