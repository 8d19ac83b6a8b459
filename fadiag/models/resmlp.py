"""Pre-LayerNorm residual MLP (docs/science.md §5), honouring the reference protocol's duck-typed contract:
``embed``, ``blocks`` (h_{l+1} = h_l + block(h_l)), ``out_ln`` + ``out_head``, and
``model(x, return_hidden=True) -> (logits, [h_0..h_L])``.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


class PreLNBlock(nn.Module):
    """f(h) = fc2(act(fc1(LN(h)))); the stream adds it: h + f(h)."""

    def __init__(self, width: int, hidden: int, act: str = "gelu"):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.act = _ACTS[act]()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.ln(h))))


class PostLNBlock(PreLNBlock):
    """block(h) = LN(h + f(h)) - h, so that h + block(h) = LN(h + f(h)): a post-LN stream in residual form."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.ln(h + self.fc2(self.act(self.fc1(h)))) - h


class ResMLP(nn.Module):
    """embed = Linear(in_dim, width); ``depth`` blocks; logits = out_head(out_ln(h_L)).

    Args: in_dim, width, depth, n_classes, hidden_mult (block hidden = hidden_mult * width),
    act (gelu|relu|tanh|silu), block ("pre_ln" | "post_ln").
    """

    def __init__(self, in_dim: int, width: int, depth: int, n_classes: int, hidden_mult: int = 4,
                 act: str = "gelu", block: str = "pre_ln"):
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"act must be one of {', '.join(_ACTS)}, got {act!r}")
        if block not in ("pre_ln", "post_ln"):
            raise ValueError(f"block must be pre_ln or post_ln, got {block!r}")
        cls = PreLNBlock if block == "pre_ln" else PostLNBlock
        self.embed = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList([cls(width, hidden_mult * width, act) for _ in range(depth)])
        self.out_ln = nn.LayerNorm(width)
        self.out_head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        h = self.embed(x.flatten(1))
        hs = [h]
        for blk in self.blocks:
            h = h + blk(h)
            hs.append(h)
        logits = self.out_head(self.out_ln(h))
        return (logits, hs) if return_hidden else logits

    def forward_from(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """Logits from hidden state h_layer: the rest of the network."""
        for blk in self.blocks[layer:]:
            h = h + blk(h)
        return self.out_head(self.out_ln(h))
