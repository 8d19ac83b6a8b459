"""Tiny real torchvision models for tests/kernel/test_models_timm_tv.py (a spec names them "library_models:NAME"):
torchvision's own classes, built small so the default suite stays fast."""

from __future__ import annotations

from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer


def tv_convnext(num_classes: int = 3) -> ConvNeXt:
    """torchvision ConvNeXt, stages of 1, 2, 1 CNBlocks (widths 8, 16, 32)."""
    cfg = [CNBlockConfig(8, 16, 1), CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)]
    return ConvNeXt(cfg, num_classes=num_classes)


def tv_swin(num_classes: int = 3) -> SwinTransformer:
    """torchvision SwinTransformer, stages of 1 and 2 blocks (embed 16, windows of 4 patches of 2 px)."""
    return SwinTransformer(patch_size=[2, 2], embed_dim=16, depths=[1, 2], num_heads=[1, 2], window_size=[4, 4],
                           num_classes=num_classes)
