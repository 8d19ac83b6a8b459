"""Encoder-decoder models (T5, BART): how fadiag calls them (docs/models.md, "Encoder-decoder models").

The encoder reads the token ids x (B, T). The decoder is fed the model's own right shift of x with one more
position, ``prepare_decoder_input_ids_from_labels(x + [x_last])`` = (decoder start token, x_0 .. x_{T-1}), and
the logits of positions 1..T are kept: logits[:, t] has seen x_0..x_t, exactly as a causal LM's. ``loss: lm``
then scores logits[:, t] against y[:, t + 1] as for every LM: the (B, T) labels are the decoder's targets,
shifted once (never twice). fadiag.subject refuses labels other than x (the decoder is fed x).
"""

from __future__ import annotations

import torch

from ..errors import DataError


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


def decoder_logits(logits: torch.Tensor) -> torch.Tensor:
    """The logits of decoder positions 1..T (position 0 has seen only the start token)."""
    return logits[:, 1:]
