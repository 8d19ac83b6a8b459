"""Attention masks (docs/models.md, "Attention masks"): token ids that carry their (B, T) 0/1 mask.

A data file may hold ``attention_mask`` beside x and y (fadiag.data). x then becomes a :class:`MaskedIds`:
a tensor like any other for every caller (shape, dtype, slicing), whose rows keep their mask through the
operations batches go through (row selection, ``repeat``, ``cat``, ``to``/``cpu``, ``clone``/``detach``); any
other operation gives a plain tensor. The model is called with ``attention_mask=mask``
(:func:`model_inputs`), token pooling takes the non-pad tokens only (:func:`last_index`, fadiag.stream.spec
``pool_state``), and ``loss: lm`` ignores pad positions (:func:`masked_labels`).
"""

from __future__ import annotations

import functools
import inspect

import torch

from ..errors import DataError


def _passes():
    T = torch.Tensor
    return {T.__getitem__, T.repeat, T.clone, T.detach, T.contiguous, T.index_select, torch.index_select, torch.cat}


def _moves():
    T = torch.Tensor
    return {T.to, T.cpu, T.cuda, T.long, T.int, T.float, T.double}


class MaskedIds(torch.Tensor):
    """Token ids (B, T) with ``.attention_mask`` (B, T) int64 0/1 (see the module docstring)."""

    attention_mask: torch.Tensor

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or (args and out is args[0]):
            return out  # in place (requires_grad_, a no-op .to): the same object keeps its mask
        if func in _MOVES:
            src = args[0] if args and isinstance(args[0], MaskedIds) else None
            m = None if src is None else src.attention_mask.to(out.device)
        elif func in _PASSES:
            with torch._C.DisableTorchFunctionSubclass():
                m = func(*_masks(args), **kwargs)
        else:
            return out
        return with_mask(out, m) if isinstance(m, torch.Tensor) and m.shape == out.shape and out.dim() == 2 else out

    def __deepcopy__(self, memo):
        return with_mask(plain(self).clone(), self.attention_mask.clone())

    def __reduce_ex__(self, protocol):
        return with_mask, (plain(self), self.attention_mask)


_PASSES, _MOVES = _passes(), _moves()


def _masks(args):
    """args with every MaskedIds replaced by its mask (one level into lists, for torch.cat); None if a tensor
    argument carries no mask."""
    def one(a):
        if isinstance(a, MaskedIds):
            return a.attention_mask
        return [one(t) for t in a] if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor) else a
    return tuple(one(a) for a in args)


def with_mask(x: torch.Tensor, mask: torch.Tensor) -> MaskedIds:
    """x as MaskedIds carrying ``mask`` (same shape)."""
    with torch._C.DisableTorchFunctionSubclass():
        t = x.as_subclass(MaskedIds)
    t.attention_mask = mask
    return t


def mask_of(x):
    """The attention mask x carries, or None."""
    return getattr(x, "attention_mask", None) if isinstance(x, MaskedIds) else None


def plain(x):
    """x as a plain tensor (what the model's forward gets)."""
    if not isinstance(x, MaskedIds):
        return x
    with torch._C.DisableTorchFunctionSubclass():
        return x.as_subclass(torch.Tensor)


def check_mask(mask, x, *, source: str):
    """A data file's attention_mask, validated against x: (N, T) like x, values 0/1, no all-zero row.
    Returns it as int64."""
    if not isinstance(mask, torch.Tensor) or mask.dtype.is_complex:
        raise DataError("attention_mask must be a real array", source=source)
    if mask.dim() != 2 or tuple(mask.shape) != tuple(x.shape[:2]) or x.dim() != 2:
        raise DataError(f"attention_mask has shape {tuple(mask.shape)}, x {tuple(x.shape)}: it must be (N, T), the "
                        "same as the token ids x", source=source)
    m = mask.double()
    if not bool(((m == 0) | (m == 1)).all()):
        raise DataError("attention_mask must hold only 0 and 1 (1 = a real token, 0 = padding)", source=source)
    empty = (m.sum(1) == 0).nonzero().flatten()
    if empty.numel():
        raise DataError(f"attention_mask row {int(empty[0])} is all zero ({empty.numel()} such row(s)): every row "
                        "needs at least one real token", source=source)
    return mask.long()


@functools.lru_cache(maxsize=64)
def _takes_mask(cls) -> bool:
    try:
        return "attention_mask" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return False


def model_inputs(model, x) -> tuple:
    """(args, kwargs) for ``model(...)``: (x,) alone, or the plain ids with ``attention_mask=mask``. A mask for
    a model whose forward has no ``attention_mask`` parameter is bad input."""
    m = mask_of(x)
    if m is None:
        return (x,), {}
    if not _takes_mask(type(model)):
        raise DataError(f"the data holds an attention_mask but {type(model).__name__}.forward takes no "
                        "attention_mask parameter (drop attention_mask from the data file)", source="data")
    return (plain(x),), {"attention_mask": m}


def masked_labels(y, x, loss: str):
    """loss lm: the labels with pad positions (mask 0) set to -100 (ignored); otherwise y as is."""
    m = mask_of(x)
    if loss != "lm" or m is None or tuple(y.shape) != tuple(m.shape):
        return y
    return y.masked_fill(m.to(y.device) == 0, -100)


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) the position of each row's last real token (mask 1)."""
    pos = torch.arange(mask.shape[1], device=mask.device)
    return (pos * (mask != 0)).amax(1)
