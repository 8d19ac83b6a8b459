"""A minimal pre-LN Vision Transformer with the reference contract in ViT naming: ``patch_embed``,
``blocks`` (h_{l+1} = h_l + block(h_l)), ``norm`` + ``head`` on the class token (index 0), and
``model(x, return_hidden=True) -> (logits, [h_0..h_L])`` with h_l of shape (B, T, d).
"""

from __future__ import annotations

import torch
from torch import nn


class ViTBlock(nn.Module):
    """Returns the residual increment: attn(LN1(h)) + mlp(LN2(h + attn(LN1(h))))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.ln1(h)
        a = self.attn(a, a, a, need_weights=False)[0]
        return a + self.mlp(self.ln2(h + a))


class PatchEmbed(nn.Module):
    """Images (B, C, H, W) -> tokens (B, 1 + n_patches, d): class token + linear patch projection + positions."""

    def __init__(self, image_size: int, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        n = (image_size // patch_size) ** 2
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.proj(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(t.shape[0], -1, -1)
        return torch.cat([cls, t], dim=1) + self.pos


class ViTMini(nn.Module):
    def __init__(self, image_size: int = 8, patch_size: int = 2, in_chans: int = 1, dim: int = 32,
                 depth: int = 4, heads: int = 4, n_classes: int = 10, mlp_ratio: int = 4):
        super().__init__()
        self.image_size, self.in_chans = image_size, in_chans
        self.patch_embed = PatchEmbed(image_size, patch_size, in_chans, dim)
        self.blocks = nn.ModuleList([ViTBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flat rows from an npz: reshape to images
            x = x.view(x.shape[0], self.in_chans, self.image_size, self.image_size)
        return x

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        h = self.patch_embed(self._image(x))
        hs = [h]
        for blk in self.blocks:
            h = h + blk(h)
            hs.append(h)
        logits = self.head(self.norm(h)[:, 0])
        return (logits, hs) if return_hidden else logits

    def forward_from(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        for blk in self.blocks[layer:]:
            h = h + blk(h)
        return self.head(self.norm(h)[:, 0])
