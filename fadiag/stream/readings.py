"""How fadiag reads a model, decided on the first batch and stated, never guessed silently (docs/models.md,
"How fadiag reads the model"; docs/science.md §1, "Token models").

- **Logits.** With ``loss: lm`` the model's own output must be per-position logits (B, T, V). When it is not
  (nanoGPT's ``GPT.forward`` without targets returns the last position's logits only), the logits are made
  from h_L by the readout modules: the ``stream.readout`` paths, or the modules the forward runs after the
  last block (``ln_f``, ``lm_head``), found by recording the call order (:func:`read_logits`).
  ``stream.readout: probe`` makes them with a linear probe on pooled h_L (fadiag.stream.probe).
- **Causal or bidirectional.** For token ids (B, T): the last real token of two rows is replaced and the
  model run again; when token 0's state at every layer is unchanged the model is causal (:func:`measure_causal`).
- **Pooling** (when the spec does not name ``stream.pool``): a causal model is never read at token 0 (it
  sees only itself): the mean over (non-pad) tokens for ``loss: lm``, the last (non-pad) token otherwise;
  a bidirectional token model keeps its preset's class token, or the token mean when nothing says it has
  one. A spec's ``pool: cls`` on a measured causal model is bad input (exit 2).
- **Labels** (``loss: lm``): y = x (shifted by fadiag: logits[:, t] scored against y[:, t+1]) or already
  shifted (y[:, t] = x[:, t+1], nanoGPT's batches: scored against y[:, t]), measured on the first batch's
  rows (:func:`measure_shift`); neither or both on most rows is exit 2 naming ``data.labels_shifted``.

Everything decided here lands in the stream's ``why`` and in the report's ``data.stream.read_as``.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace

import torch

from ..errors import DataError, SpecError
from .mask import last_index, mask_of, model_inputs
from .spec import _compact, logits_of, pool_state, read_as  # noqa: F401 (read_as: importable here)

#: "most rows": the fraction of rows on which a label convention must hold to be taken (measure_shift).
SHIFT_MOST = 0.5


def _with(view, stream):
    """A copy of the view with another stream description (the view itself is never changed in place)."""
    return view._like(view.model, stream, view.settled)


def _why(stream, key: str, text: str):
    return replace(stream, why=tuple(p for p in stream.why if p[0] != key) + ((key, text),))


# -- making the logits from h_L --------------------------------------------------------------------
def final_state(view, args, kw):
    """Run the model; return h_L as the stream reaches the readout: the input of the first readout module when
    it has the last block's output shape, else the last block's output (plus its input for residual outside).
    Hooks are registered after the caller's, so they see any substitution the caller makes."""
    got: dict = {}

    def post(m, a, k, o):
        got["out"] = view._out(o)
        got["in"] = a[0] if a and isinstance(a[0], torch.Tensor) else next(
            (v for v in k.values() if isinstance(v, torch.Tensor)), None)

    def pre(m, a):
        if "ro" not in got and a and isinstance(a[0], torch.Tensor):
            got["ro"] = a[0]

    hs = [view.blocks[-1].register_forward_hook(post, with_kwargs=True)]
    if view.readout:
        hs.append(view.readout[0].register_forward_pre_hook(pre))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            view.model(*args, **kw)
    finally:
        for h in hs:
            h.remove()
    if "out" not in got:
        raise SpecError("stream: the last block was not run by the model's forward", source="stream.blocks")
    out = got["out"]
    ro = got.get("ro")
    if ro is not None and tuple(ro.shape) == tuple(out.shape):
        return ro
    return got["in"] + out if view.stream.residual == "outside" else out


def head_of(view, h, x):
    """Logits from h_L: the readout modules in order (logits_from readout) or the probe on pooled h_L."""
    if view.stream.logits_from == "probe":
        if view.probe is None:
            return None  # settling the view before the probe is fitted: no logits yet
        p = pool_state(h, view.stream.pool, view.stream.prefix_tokens, mask_of(x))
        return view.probe(p.to(view.probe.weight.dtype))
    for m in view.readout:
        h = m(h)
    return logits_of(h)


def _after_last_block(view, x) -> tuple:
    """(model output, paths of the outermost modules the forward runs after the last block, in call order)."""
    order: list = []
    done = [False]
    skip = tuple(p + "." for p in view.stream.blocks)

    def pre(name):
        return lambda m, a: order.append(name) if done[0] else None

    def last(m, a, o):
        done[0] = True

    hs = [m.register_forward_pre_hook(pre(n)) for n, m in view.model.named_modules()
          if n and n not in view.stream.blocks and not n.startswith(skip)]
    hs.append(view.blocks[-1].register_forward_hook(last))
    args, kw = model_inputs(view.model, x)
    try:
        with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
            out = view.model(*args, **kw)
    finally:
        for h in hs:
            h.remove()
    outer = [n for n in order if not any(n.startswith(o + ".") for o in order if o != n)]
    return out, tuple(dict.fromkeys(outer))


def read_logits(view, x):
    """loss lm: the model's own logits when they are per position (B, T, V); else the readout modules make
    them from h_L (the spec's stream.readout, or the modules run after the last block). Bad input (exit 2)
    when neither gives (B, T, V)."""
    st = view.stream
    if st.loss != "lm" or st.logits_from != "model":
        return view
    rows = x[:2]
    out, after = _after_last_block(view, rows)
    try:
        lg = logits_of(out)
    except SpecError:
        lg = None
    T = rows.shape[1] if rows.dim() >= 2 else None
    if lg is not None and lg.dim() == 3 and lg.shape[1] == T:
        return view
    given = st.readout != "model"
    paths = tuple(st.readout) if given else after
    what = "the model's output" if lg is None else f"the model's output {tuple(lg.shape)}"
    if not paths:
        raise SpecError(f"loss: lm needs per-position logits (B, T, vocab), but {what} is not, and no module runs "
                        "after the last block: name the readout with stream.readout", source="stream.readout")
    v = view._like(view.model, replace(st, readout=paths, logits_from="readout"), view.settled)
    with torch.no_grad():
        made = v.call(rows)
    if made.dim() != 3 or made.shape[1] != T or (lg is not None and made.shape[-1] != lg.shape[-1]):
        raise SpecError(f"loss: lm: {what} is not per-position logits, and the readout {list(paths)} on h_L gives "
                        f"{tuple(made.shape)}: name the readout with stream.readout", source="stream.readout")
    src = "stream.readout" if given else "the modules the forward runs after the last block"
    return _with(v, _why(v.stream, "logits", f"from the readout {_compact(list(paths))} on h_L ({src}): {what} is "
                    "not per-position logits"))


# -- causal or bidirectional, and the pooling it implies -------------------------------------------
def _is_ids(x) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() == 2 and not x.dtype.is_floating_point and x.shape[1] >= 2


def measure_causal(view, x):
    """True (causal), False (bidirectional) or None (not token ids, or no other token id to swap in):
    replace each row's last real token and compare token 0's state at every block's input and output."""
    if not _is_ids(x):
        return None
    rows = x[:2]
    m = mask_of(rows)
    pos = last_index(m) if m is not None else torch.full((rows.shape[0],), rows.shape[1] - 1)
    ids = rows.clone()
    vals = torch.unique(x)
    if vals.numel() < 2:
        return None
    r = torch.arange(rows.shape[0])
    cur = ids[r, pos]
    ids[r, pos] = torch.where(cur == vals[0], vals[1], vals[0])
    return _token0_fixed(view, rows, ids)


def _token0_fixed(view, a, b) -> bool:
    states: list = []

    def post(m, args, k, o):
        t = view._out(o)
        if isinstance(t, torch.Tensor) and t.dim() == 3:
            states.append(t[:, 0].detach().double())

    hs = [blk.register_forward_hook(post, with_kwargs=True) for blk in view.blocks]
    try:
        with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
            for ids in (a, b):
                args, kw = model_inputs(view.model, ids)
                view.model(*args, **kw)
    finally:
        for h in hs:
            h.remove()
    n = len(states) // 2
    if n == 0:
        return None
    for s, t in zip(states[:n], states[n:]):
        scale = float(s.abs().max()) or 1.0
        if float((s - t).abs().max()) > 1e-5 * scale:
            return False
    return True


def read_pool(view, x):
    """Measure causal on the first batch; choose the pooling when the spec does not name it (module docstring)."""
    st = view.stream
    causal = measure_causal(view, x)
    st = replace(st, causal=causal)
    if causal is not None:
        st = _why(st, "causal", ("causal" if causal else "bidirectional") + " (measured: changing the last token "
                  + ("leaves token 0's state unchanged)" if causal else "moves token 0's state)"))
    if causal and st.pool == "cls":
        if st.pool_from == "spec":
            raise SpecError("stream.pool: cls reads token 0, but the model is causal (changing the last token "
                            "leaves token 0 unchanged): token 0 sees only itself; use pool: mean or last",
                            source="stream.pool")
    if st.pool_from != "spec" and causal is not None:
        if causal:
            pool, why = ("mean", "causal model, loss lm: the mean over tokens") if st.loss == "lm" else (
                "last", "causal model: the last token, the only one that sees the whole row")
        elif st.pool_from == "preset" and st.pool == "cls":
            pool, why = "cls", "bidirectional model with a class token (the preset's)"
        else:
            pool, why = "mean", "bidirectional model, no class token known: the mean over tokens"
        st = _why(replace(st, pool=pool, prefix_tokens=0 if pool != st.pool else st.prefix_tokens), "pool", why)
    elif "pool" not in dict(st.why):
        st = _why(st, "pool", "stream.pool" if st.pool_from == "spec" else st.pool_from)
    return _with(view, st)


# -- labels of a language model --------------------------------------------------------------------
def measure_shift(x, y) -> tuple:
    """(fraction of rows with y = x, fraction with y[:, :-1] = x[:, 1:]) over the labelled (!= -100) positions."""
    if x.dim() != 2 or y.dim() != 2 or tuple(x.shape) != tuple(y.shape) or x.shape[1] < 2:
        return 0.0, 0.0
    xx, yy = x.as_subclass(torch.Tensor).long(), y.long()
    lab = yy != -100
    same = ((yy == xx) | ~lab).all(1)
    shifted = ((yy[:, :-1] == xx[:, 1:]) | ~lab[:, :-1]).all(1) & lab[:, :-1].any(1)
    same &= lab.any(1)
    n = x.shape[0]
    return float(same.sum()) / n, float(shifted.sum()) / n


def read_shift(view, x, y):
    """loss lm: are the labels already shifted? data.labels_shifted when the spec sets it, else measured."""
    st = view.stream
    if st.loss != "lm" or y is None:
        return view
    if st.labels_shifted is not None:
        return _with(view, _why(st, "labels", ("already shifted" if st.labels_shifted else
                                                "y = x, shifted by fadiag") + " (data.labels_shifted)"))
    same, shifted = measure_shift(x, y)
    if (same > SHIFT_MOST) == (shifted > SHIFT_MOST):
        raise DataError(f"loss: lm: cannot tell the label convention: y = x on {same:.0%} of the first batch's "
                        f"rows, y[:, :-1] = x[:, 1:] (already shifted) on {shifted:.0%}; set data.labels_shifted: "
                        "true (y[:, t] is the token after x[:, t]) or false (y = x, fadiag shifts)",
                        source="data.labels_shifted")
    is_shifted = shifted > SHIFT_MOST
    why = (f"already shifted (y[:, :-1] = x[:, 1:] on {shifted:.0%} of the first batch's rows): not shifted again"
           if is_shifted else f"y = x on {same:.0%} of the first batch's rows: fadiag shifts by one")
    return _with(view, _why(replace(st, labels_shifted=is_shifted), "labels", why))


def read_model(view, x, y=None):
    """The first batch's readings, in order: logits (readout), causal and pooling, label shift."""
    view = read_logits(view, x)
    view = read_pool(view, x)
    return read_shift(view, x, y)

