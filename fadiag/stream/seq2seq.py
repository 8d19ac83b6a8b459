"""Encoder-decoder models (T5, BART): how fadiag calls them (docs/models.md, "Encoder-decoder models").

The encoder reads the token ids x (B, T). The decoder is fed the model's own right shift of x with one more
position, ``prepare_decoder_input_ids_from_labels(x + [x_last])`` = (decoder start token, x_0 .. x_{T-1}), and
the logits of positions 1..T are kept: logits[:, t] has seen x_0..x_t, exactly as a causal LM's. ``loss: lm``
then scores logits[:, t] against y[:, t + 1] as for every LM: the (B, T) labels are the decoder's targets,
shifted once (never twice). fadiag.subject refuses labels other than x (the decoder is fed x).

:func:`attach` puts this on the model itself as a forward pre-hook (decoder inputs, when the caller gives none)
and a forward hook (the logits kept), so every caller (the trial forward, the stream view, the float64 copy,
which keeps the hooks) sees the same model.
"""

from __future__ import annotations

import torch

from ..errors import DataError

_MARK = "_fadiag_seq2seq"
_GIVEN = ("decoder_input_ids", "decoder_inputs_embeds", "labels")


def is_encoder_decoder(model) -> bool:
    cfg = getattr(model, "config", None)
    return bool(getattr(cfg, "is_encoder_decoder", False)) and \
        callable(getattr(model, "prepare_decoder_input_ids_from_labels", None))


def decoder_inputs(model, ids: torch.Tensor) -> torch.Tensor:
    """(B, T + 1): the decoder start token, then ids (the model's own shift, pad rules included)."""
    try:
        return model.prepare_decoder_input_ids_from_labels(torch.cat([ids, ids[:, -1:]], 1))
    except Exception as e:
        msg = " ".join(str(e).split())[:160]
        raise DataError(f"{type(model).__name__} cannot form its decoder inputs ({type(e).__name__}: {msg})",
                        source="model config") from None


def attach(model) -> bool:
    """Install the hooks on an encoder-decoder model (once); False for any other model."""
    if not is_encoder_decoder(model) or getattr(model, _MARK, False):
        return getattr(model, _MARK, False)
    fed = [False]

    def pre(m, args, kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        fed[0] = isinstance(ids, torch.Tensor) and ids.dim() == 2 and all(kwargs.get(k) is None for k in _GIVEN)
        if not fed[0]:
            return None
        with torch._C.DisableTorchFunctionSubclass():
            plain = ids.as_subclass(torch.Tensor)
        return args, {**kwargs, "decoder_input_ids": decoder_inputs(m, plain)}

    def post(m, args, kwargs, out):
        if not fed[0]:
            return None
        if isinstance(out, tuple):
            return (out[0][:, 1:], *out[1:])
        out.logits = out.logits[:, 1:]  # position 0 has seen only the start token
        return out

    model.register_forward_pre_hook(pre, with_kwargs=True)
    model.register_forward_hook(post, with_kwargs=True)
    setattr(model, _MARK, True)
    return True
