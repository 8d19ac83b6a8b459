"""Real timm and torchvision models (CI installs torch 2.14.1 + torchvision 0.29.1 + timm: .ci/run), named by
``arch`` alone with no ``stream:`` section: one block per residual unit, and (a), (b) equal to a float64 oracle
that hooks the units this file lists by hand (not fadiag's discovery) at float32 tolerance."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from coverage_table import check as check_row
from test_stream import B, check_ab, ce_loss, grads64, run, write_case, xy

timm = pytest.importorskip("timm")
tv = pytest.importorskip("torchvision")


def _skips(prefix, stage_counts, first_has_skip):
    """EfficientNet / MobileNet: the blocks of each stage that keep a shortcut (all but a stage's first block,
    whose stride or width changes, unless first_has_skip names it)."""
    return [f"{prefix}.{i}.{j}" for i, n in enumerate(stage_counts) for j in range(n)
            if j > 0 or (i, j) in first_has_skip]


#: name -> (arch, args, the residual units by hand, pool of a (B, T, d) state)
CASES = {
    "timm_vit": ("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32,
                                               "num_heads": 2}, ["blocks.0", "blocks.1"],
                 "cls"),
    "timm_deit": ("timm:deit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 32,
                                                 "num_heads": 2}, ["blocks.0", "blocks.1", "blocks.2"], "cls"),
    "timm_resnet": ("timm:resnet10t", {}, ["layer1.0", "layer2.0", "layer3.0", "layer4.0"], None),
    "timm_convnext": ("timm:convnext_atto", {"depths": [1, 2, 1, 1], "dims": [8, 16, 24, 32]},
                      ["stages.0.blocks.0", "stages.1.blocks.0", "stages.1.blocks.1",
                       "stages.2.blocks.0", "stages.3.blocks.0"], None),
    "timm_efficientnet": ("timm:efficientnet_b0", {}, _skips("blocks", [1, 2, 2, 3, 3, 4, 1], ()), None),
    # x0.5 rounds stage 3's 40 and 48 channels both to 24: its first block keeps its shortcut
    "timm_mobilenetv3": ("timm:mobilenetv3_small_050", {}, _skips("blocks", [1, 2, 3, 2, 3, 1], {(3, 0)}), None),
    "timm_swin": ("timm:swin_tiny_patch4_window7_224", {"img_size": 32, "patch_size": 2, "window_size": 4,
                                                        "embed_dim": 16, "depths": [1, 2], "num_heads": [1, 2]},
                  ["layers.0.blocks.0", "layers.1.blocks.0", "layers.1.blocks.1"], None),
    "timm_regnet": ("timm:regnetx_002", {}, [f"s{i}.b{j}" for i, n in ((1, 1), (2, 1), (3, 4), (4, 7))
                                             for j in range(1, n + 1)], None),
    "tv_resnet": ("torchvision.models:resnet18", {}, [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)], None),
    "tv_mobilenet_v3": ("torchvision.models:mobilenet_v3_small", {},
                        ["features.3", "features.5", "features.6", "features.8", "features.10", "features.11"], None),
    "tv_convnext": ("library_models:tv_convnext", {}, ["features.1.0", "features.3.0", "features.3.1",
                                                       "features.5.0"], None),
    "tv_vision_transformer": ("torchvision.models.vision_transformer:VisionTransformer",
                              {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32,
                               "mlp_dim": 64}, ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"],
                              "cls"),
    "tv_efficientnet": ("torchvision.models:efficientnet_b0", {}, _skips("features", [0, 1, 2, 2, 3, 3, 4, 1], ()),
                        None),
    "tv_swin": ("library_models:tv_swin", {}, ["features.1.0", "features.3.0", "features.3.1"], None),
}


def _oracle(m, units, x, y, pool):
    """float64: h_l = what unit l consumes, h_L = the last unit's output (hooks on the listed modules)."""
    m = m.double().eval()
    hs = []
    mods = [m.get_submodule(p) for p in units]
    hooks = [mod.register_forward_pre_hook(lambda mod, a: hs.append(a[0])) for mod in mods]
    hooks.append(mods[-1].register_forward_hook(lambda mod, a, o: hs.append(o)))
    try:
        loss = ce_loss(m(x.double()), y)
    finally:
        for h in hooks:
            h.remove()
    gs = grads64(loss, hs)
    if pool == "cls":
        return [h[:, 0] for h in hs], [g[:, 0] for g in gs]
    tok = [h.dim() == 3 for h in hs]  # (B, T, d) token states: the token mean (its gradient: the token sum)
    return ([h.mean(1) if t else h for h, t in zip(hs, tok)], [g.sum(1) if t else g for g, t in zip(gs, tok)])


@pytest.mark.parametrize("name", sorted(CASES))
def test_library_model_by_arch_alone_matches_float64(name, tmp_path, run_cli):
    arch, args, units, pool = CASES[name]
    args = {**args, "num_classes": 3}
    shutil.copy(Path(__file__).resolve().parents[1] / "library_models.py", tmp_path / "library_models.py")
    from fadiag.models import build_model

    torch.manual_seed(0)
    m = build_model(arch, args, base_dir=str(tmp_path)).eval()
    x, y = xy(11, 3, 32, 32)
    ck, sp = write_case(tmp_path, m, arch, args, x, y)
    rep = run(run_cli, "audit", ck, sp)
    st = rep["data"]["stream"]
    assert st["n_blocks"] == len(units), (st["blocks"], units)
    check_row(name, st)  # docs/models.md's coverage table
    hs, gs = _oracle(m, units, x[:B], y[:B], pool)
    check_ab(rep, hs, gs)


def test_stream_auto_reads_convnext_blocks_not_stages(tmp_path, run_cli):
    """stream: auto on timm ConvNeXt picks the blocks, never the stages (which hold the downsampling)."""
    arch, args, units, _ = CASES["timm_convnext"]
    args = {**args, "num_classes": 3}
    torch.manual_seed(0)
    m = timm.create_model(arch[5:], pretrained=False, **args).eval()
    x, y = xy(12, 3, 32, 32)
    ck, sp = write_case(tmp_path, m, arch, args, x, y, "auto")
    st = run(run_cli, "audit", ck, sp)["data"]["stream"]
    assert st["n_blocks"] == len(units) and "stages.0.blocks.0" in st["source"], st
