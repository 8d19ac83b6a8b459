"""Test models for the residual view (tests/test_stream*.py), imported by specs as "stream_models:Class".

- ``UserResMLP``: a residual MLP with non-contract names (``inp``, ``layers``, ``ln_f``, ``fc_out``);
  ``inside=True`` puts the residual inside the block (block(h) = h + f(h)), else the model adds it.
  Both ways compute the same function from the same state dict.
- ``TimmLayoutViT``: a ViT with timm's VisionTransformer attribute layout (patch_embed, cls_token, pos_embed,
  norm_pre, blocks returning x + attn + mlp, norm, head, global_pool, num_prefix_tokens). timm itself needs
  torchvision; tests/kernel/test_models_timm_tv.py runs the real libraries where they import (torch 2.14.1 with
  torchvision 0.29.1 does).
- ``TVLayoutResNet``: a small ResNet with torchvision's layout (conv1/bn1/relu/maxpool/layer1..4/avgpool/fc,
  BasicBlock with downsample), for the same reason.
- ``PlainMLP``: widths 16/12/8 (no residual at all): (f) must be N/A, not exit 3.
"""

from __future__ import annotations

import torch
from torch import nn


class _F(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, d)

    def f(self, h):
        return self.fc2(torch.tanh(self.fc1(self.norm(h))))


class InsideBlock(_F):
    def forward(self, h):
        return h + self.f(h)


class OutsideBlock(_F):
    def forward(self, h):
        return self.f(h)


class UserResMLP(nn.Module):
    def __init__(self, d_in: int = 8, d: int = 6, depth: int = 3, n_out: int = 3, inside: bool = False):
        super().__init__()
        self.inside = inside
        self.inp = nn.Linear(d_in, d)
        self.layers = nn.ModuleList([(InsideBlock if inside else OutsideBlock)(d) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(d)
        self.fc_out = nn.Linear(d, n_out)

    def forward(self, x):
        h = self.inp(x)
        for blk in self.layers:
            h = blk(h) if self.inside else h + blk(h)
        return self.fc_out(self.ln_f(h))


class _Attn(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.mha = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class TimmBlock(nn.Module):
    """timm's Block: x = x + attn(norm1(x)); x = x + mlp(norm2(x))."""

    def __init__(self, d, heads):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), _Attn(d, heads)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TimmLayoutViT(nn.Module):
    def __init__(self, img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=3, num_heads=2, num_classes=3,
                 global_pool="token"):
        super().__init__()
        n = (img_size // patch_size) ** 2
        self.global_pool, self.num_prefix_tokens, self.in_chans, self.img_size = global_pool, 1, in_chans, img_size
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, embed_dim) * 0.02)
        self.norm_pre = nn.Identity()
        self.blocks = nn.Sequential(*[TimmBlock(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x.view(x.shape[0], self.in_chans, self.img_size, self.img_size)
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.pos_embed
        t = self.norm(self.blocks(self.norm_pre(t)))
        t = t[:, 0] if self.global_pool == "token" else t[:, self.num_prefix_tokens:].mean(1)
        return self.head(t)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + idt)


class TVLayoutResNet(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 4, in_chans: int = 1, img_size: int = 8):
        super().__init__()
        self.in_chans, self.img_size = in_chans, img_size
        self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU()
        self.maxpool = nn.Identity()
        ws = [width, width, 2 * width, 2 * width]
        cin = width
        for i, w in enumerate(ws):
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, 1 if w == cin else 2), BasicBlock(w, w)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x.view(x.shape[0], self.in_chans, self.img_size, self.img_size)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class PlainMLP(nn.Module):
    def __init__(self, d_in: int = 8, n_out: int = 3):
        super().__init__()
        self.inp = nn.Linear(d_in, 16)
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(16, 12), nn.Tanh()), nn.Sequential(nn.Linear(12, 8),
                                                                                              nn.Tanh()))
        self.out = nn.Linear(8, n_out)

    def forward(self, x):
        return self.out(self.layers(self.inp(x)))


class Noisy(UserResMLP):
    """Prints while it is built and run: stdout must stay clean JSON."""

    def __init__(self, **kw):
        print("building Noisy")
        super().__init__(**kw)

    def forward(self, x):
        print("forward")
        return super().forward(x)


class Grumpy(nn.Module):
    def __init__(self):
        super().__init__()
        raise KeyError("no such weights")


def make_resmlp(depth: int = 3) -> UserResMLP:
    """A factory, as torchvision's resnet18 is: annotated to return an nn.Module subclass."""
    return UserResMLP(depth=depth)


def make_unannotated(depth: int = 3):
    return UserResMLP(depth=depth)


class NetWrapped(nn.Module):
    """Keeps its layers under ``self.net``: its keys start with "net." and must not be stripped."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3))

    def forward(self, x):
        return self.net(x)


class FALinear(nn.Linear):
    """A BioTorch-style feedback-alignment layer: a fixed feedback matrix beside the weight."""

    def __init__(self, i, o):
        super().__init__(i, o)
        self.weight_backward = nn.Parameter(torch.randn(o, i), requires_grad=False)


class FANet(UserResMLP):
    def __init__(self):
        super().__init__()
        self.fc_out = FALinear(6, 3)
