"""Real timm VisionTransformer and torchvision ResNet, where they import.

timm imports torchvision, and PyPI's torchvision wheel is a CUDA build that fails beside the CPU torch
("operator torchvision::nms does not exist"), so on the project's CPU machines these skip; the same presets
are checked on models with timm's and torchvision's attribute layouts in tests/test_stream.py.
"""

from __future__ import annotations

import pytest
import torch

from test_stream import B, check_ab, ce_loss, grads64, run, write_case, xy


def test_timm_vit_from_its_name_matches_float64(tmp_path, run_cli):
    timm = pytest.importorskip("timm")
    args = {"num_classes": 3, "img_size": 8, "patch_size": 4, "in_chans": 1, "depth": 3, "embed_dim": 16,
            "num_heads": 2}
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, **args).eval()
    x, y = xy(11, 1, 8, 8)
    ck, sp = write_case(tmp_path, m, "timm:vit_tiny_patch16_224", args, x, y)
    rep = run(run_cli, "audit", ck, sp)
    assert rep["data"]["stream"]["source"] == "preset: timm VisionTransformer"
    m = m.double()
    h = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x[:B].double()))))
    hs = [h]
    for blk in m.blocks:
        h = blk(h)
        hs.append(h)
    gs = grads64(ce_loss(m.forward_head(m.norm(h)), y[:B]), hs)
    check_ab(rep, [t[:, 0] for t in hs], [g[:, 0] for g in gs])
    cr = run(run_cli, "credit", ck, sp)
    assert cr["means"]["rho"]["deep_only"] > 0.99


def test_torchvision_resnet18_factory_per_stage(tmp_path, run_cli):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    m = tv.models.resnet18(num_classes=3).eval()
    x, y = xy(12, 3, 16, 16)
    ck, sp = write_case(tmp_path, m, "torchvision.models:resnet18", {"num_classes": 3}, x, y)
    rep = run(run_cli, "audit", ck, sp)
    assert rep["data"]["stream"]["source"] == "preset: torchvision ResNet" and rep["data"]["stream"]["n_blocks"] == 8
    assert [u is None for u in rep["block_update_norms"]] == [False, False, True, False, True, False, True, False]
    m = m.double()
    h = m.maxpool(m.relu(m.bn1(m.conv1(x[:B].double()))))
    hs = [h]
    for stage in (m.layer1, m.layer2, m.layer3, m.layer4):
        for blk in stage:
            h = blk(h)
            hs.append(h)
    gs = grads64(ce_loss(m.fc(torch.flatten(m.avgpool(h), 1)), y[:B]), hs)
    check_ab(rep, hs, gs)
