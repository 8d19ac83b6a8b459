"""The residual-stream view of a model (docs/models.md, docs/science.md §1): the one place fadiag runs a model.

A :class:`Stream` names the residual stream of any ``nn.Module`` by module paths: the blocks (h_{l+1} is
what block l hands to block l+1), whether a block already adds its input (``inside``: timm, Hugging Face,
torchvision) or the model adds it (``outside``: fadiag's reference contract, h + block(h)), the index of
the stream in a block's tuple output, the readout, the token pooling and the loss. :class:`StreamView`
reads the stream through forward hooks, so the model's own forward runs unchanged:

- h_l (l < L) is the tensor block l consumes (a forward pre-hook on block l), h_L the last block's
  output (inside) or the readout's input (outside). The captured tensors are the ones in the graph, so
  ONE forward + backward gives h_0..h_L and g_l = d(mean loss)/dh_l (``full_pass``, ``stream_pass``).
- "the rest of the network from layer l with h_l replaced" (credit's ρ_l, Δ_l) is the same forward with
  a hook that substitutes the stream at layer l (:meth:`StreamView.rest_fn`).
- the graph cut before every block and the readout (DFA training) is :meth:`StreamView.local_forward`.
- :meth:`StreamView.double` is the float64 copy (credit, pitfall 3), with the same paths.
- any modules' inputs or outputs with their loss gradients (edge inference): :func:`capture_modules`.

Per-sample vectors: ``pool`` turns a (B, T, d) state into (B, d): ``cls`` token 0, ``last`` token T-1,
``mean`` the mean over the tokens after ``prefix_tokens``, ``none`` flattened. A (B, ...) state that is not
(B, T, d) is flattened. The gradient of a pooled vector is the loss's derivative along the same embedding
(cls/last: that token's gradient; mean: the sum over the pooled tokens, the derivative of a shift applied
to all of them; none: flattened).

Attention masks (:mod:`fadiag.stream.mask`): token ids that carry a (B, T) 0/1 mask (``MaskedIds``) are given
to the model with ``attention_mask=mask``; the view bound to the batch (:meth:`StreamView.for_batch`) pools
``last`` as each row's last non-pad token and ``mean`` over the non-pad tokens only, and ``loss: lm`` ignores
the pad positions.

Parameter ``.grad`` buffers are never touched and every submodule's training mode is restored.
"""

from __future__ import annotations

from .passes import (StreamPass, capture_modules, first_batch_view, full_pass, grads_or_zeros, settled_pass,
                     stream_pass)
from .mask import MaskedIds, mask_of, with_mask
from .spec import (CONTRACT, LOSSES, POOLS, RESIDUALS, Stream, accuracy, expand_blocks, logits_of, per_sample,
                   per_sample_loss, pool_state)
from .view import StreamView

__all__ = ["CONTRACT", "LOSSES", "MaskedIds", "POOLS", "RESIDUALS", "Stream", "StreamPass", "StreamView", "accuracy",
           "capture_modules", "expand_blocks", "first_batch_view", "full_pass", "grads_or_zeros", "logits_of",
           "mask_of", "per_sample", "per_sample_loss", "pool_state", "settled_pass", "stream_pass", "with_mask"]
