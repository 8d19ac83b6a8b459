"""The one residual view (fadiag/stream.py, fadiag/models/presets.py) against direct float64 references.

Every family runs ``fadiag audit`` and ``fadiag credit`` from a spec with no user glue; (a) and (b) are
compared with a float64 computation on the same model and batch that does not use fadiag.stream (a manual
loop, or Hugging Face's own ``output_hidden_states`` plus a hook for h_L, which HF only gives after the
final norm).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _tol import tol

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
import stream_models as SM  # noqa: E402

B, NB = 8, 2


def write_case(tmp_path, model, arch, args, x, y, stream=None, loss=None, name="m"):
    torch.save({"model": model.state_dict()}, tmp_path / f"{name}.pt")
    np.savez(tmp_path / f"{name}_data.npz", x=x.numpy(), y=y.numpy())
    spec = {"model": {"arch": arch, "args": args},
            "data": {"source": "npz", "path": f"{name}_data.npz", "batch_size": B, "batches": NB}}
    if stream is not None:
        spec["stream"] = stream
    if loss is not None:
        spec["loss"] = loss
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / f"{name}.pt", tmp_path / f"{name}.yaml"


def run(run_cli, cmd, ckpt, spec, *extra):
    import shutil

    shutil.copy(HERE / "stream_models.py", Path(spec).parent / "stream_models.py")
    code, out, err = run_cli([cmd, str(ckpt), "--spec", str(spec), "-f", "json", "-q", *extra])
    assert code in (0, 1), err
    return json.loads(out)


def xy(seed, *shape):
    """Seeded (x, y): x standard normal (B * NB, *shape), y labels in 0..2."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B * NB, *shape, generator=g), torch.randint(0, 3, (B * NB,), generator=g)


def med_norms(ts):
    # the reference's lower median (torch.median), fadiag's default convention
    return [float(torch.median(t.detach().reshape(t.shape[0], -1).double().norm(dim=1))) for t in ts]


def grads64(loss, hs):
    return list(torch.autograd.grad(loss, hs))


def lm_loss(logits, ids):
    z, t = logits[:, :-1].double(), ids[:, 1:]
    ce = torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), t.reshape(-1), reduction="none")
    return ce.view(t.shape).mean(1).mean()


def ce_loss(logits, y):
    return torch.nn.functional.cross_entropy(logits.double(), y)


def check_ab(rep, hs, gs, rtol=None):
    """fadiag runs the model in float32 (norms and loss in float64): float32 tolerance (tests/_tol.py)
    against a reference whose forward is float64 throughout."""
    kw = {"rtol": rtol, "atol": 0} if rtol is not None else tol("float32", atol=0)
    np.testing.assert_allclose(rep["residual_norms"], med_norms(hs), **kw)
    np.testing.assert_allclose(rep["bp_grad_norms"], med_norms(gs), **kw)


# -- a user ResMLP with non-contract names, both residual conventions -------------------------------

def _resmlp_pair():
    torch.manual_seed(0)
    out = SM.UserResMLP(inside=False)
    ins = SM.UserResMLP(inside=True)
    ins.load_state_dict(out.state_dict())
    x, y = xy(1, 8)
    return out, ins, x, y


def resmlp_ref(m, x, y, loss):
    """The outside-residual UserResMLP by hand: h_0 = inp(x), h_{l+1} = h_l + block(h_l); grads of loss."""
    m = m.eval()
    h = m.inp(x)
    hs = [h]
    for blk in m.layers:
        h = h + blk(h)
        hs.append(h)
    return hs, grads64(loss(m.fc_out(m.ln_f(h)), y), hs)


def test_user_resmlp_by_stream_section_matches_a_float64_loop(tmp_path, run_cli):
    out, _, x, y = _resmlp_pair()
    st = {"embed": "inp", "blocks": "layers", "residual": "outside", "readout": ["ln_f", "fc_out"], "pool": "none"}
    ck, sp = write_case(tmp_path, out, "stream_models:UserResMLP", {}, x, y, st)
    rep = run(run_cli, "audit", ck, sp)
    hs, gs = resmlp_ref(out.double(), x[:B].double(), y[:B], ce_loss)
    check_ab(rep, hs, gs)
    assert rep["data"]["stream"]["residual"] == "outside"
    assert "confirmed" in rep["data"]["stream"]["notes"][0]


def test_residual_inside_and_outside_give_identical_numbers(tmp_path, run_cli):
    """The same network written both ways: never the residual twice, identical per-layer numbers."""
    out, ins, x, y = _resmlp_pair()
    ck1, sp1 = write_case(tmp_path, out, "stream_models:UserResMLP", {"inside": False}, x, y,
                          {"embed": "inp", "blocks": "layers", "readout": ["ln_f", "fc_out"]}, name="o")
    ck2, sp2 = write_case(tmp_path, ins, "stream_models:UserResMLP", {"inside": True}, x, y,
                          {"embed": "inp", "blocks": "layers", "readout": ["ln_f", "fc_out"]}, name="i")
    a1, a2 = run(run_cli, "audit", ck1, sp1), run(run_cli, "audit", ck2, sp2)
    assert a1["data"]["stream"]["residual"] == "outside" and a2["data"]["stream"]["residual"] == "inside"
    for k in ("residual_norms", "bp_grad_norms", "block_update_norms"):
        np.testing.assert_allclose(a1[k], a2[k], rtol=1e-6)
    c1, c2 = run(run_cli, "credit", ck1, sp1), run(run_cli, "credit", ck2, sp2)
    for r1, r2 in zip(c1["layers"], c2["layers"]):
        assert r1["gamma"] == pytest.approx(r2["gamma"], rel=1e-9)
        assert r1["rho"] == pytest.approx(r2["rho"], rel=1e-6, abs=1e-9)
        assert r1["g_norm_mean_ce"] == pytest.approx(r2["g_norm_mean_ce"], rel=1e-9)
    assert c1["means"]["rho"]["deep_only"] > 0.99  # the BP signal predicts the loss: ρ ≈ 1


def test_a_contradicted_residual_is_bad_input(tmp_path, run_cli):
    """Declaring residual: outside for blocks that return h + f would count the residual twice: exit 2."""
    _, ins, x, y = _resmlp_pair()
    ck, sp = write_case(tmp_path, ins, "stream_models:UserResMLP", {"inside": True}, x, y,
                        {"embed": "inp", "blocks": "layers", "residual": "outside", "readout": ["ln_f", "fc_out"]})
    import shutil

    shutil.copy(HERE / "stream_models.py", tmp_path / "stream_models.py")
    code, out, err = run_cli(["audit", str(ck), "--spec", str(sp)])
    assert code == 2 and "residual: inside" in err and len(err.strip().splitlines()) == 1


def test_timm_layout_vit_preset_matches_float64(tmp_path, run_cli):
    torch.manual_seed(0)
    m = SM.TimmLayoutViT()
    x, y = xy(2, 1, 8, 8)
    ck, sp = write_case(tmp_path, m, "stream_models:TimmLayoutViT", {}, x, y)
    rep = run(run_cli, "audit", ck, sp)
    st = rep["data"]["stream"]
    assert st["source"] == "preset: timm VisionTransformer" and st["residual"] == "inside" and st["pool"] == "cls"
    m = m.double().eval()
    xb = x[:B].double()
    t = m.patch_embed(xb).flatten(2).transpose(1, 2)
    h = torch.cat([m.cls_token.expand(B, -1, -1), t], 1) + m.pos_embed
    hs = [h]
    for blk in m.blocks:
        h = blk(h)
        hs.append(h)
    gs = grads64(ce_loss(m.head(m.norm(h)[:, 0]), y[:B]), hs)
    check_ab(rep, [t[:, 0] for t in hs], [g[:, 0] for g in gs])
    cr = run(run_cli, "credit", ck, sp)
    # The BP signal through the view: ρ ≈ 1 at every deep layer (not 0.82-0.97 as with h + blk(h)).
    assert cr["means"]["rho"]["deep_only"] > 0.99, cr["means"]["rho"]


def test_resnet_per_stage_is_na_where_width_changes(tmp_path, run_cli):
    torch.manual_seed(0)
    m = SM.TVLayoutResNet().eval()
    x, y = xy(3, 1, 8, 8)
    ck, sp = write_case(tmp_path, m, "stream_models:TVLayoutResNet", {}, x, y)
    rep = run(run_cli, "audit", ck, sp)
    assert rep["data"]["stream"]["source"] == "preset: torchvision ResNet"
    assert rep["data"]["stream"]["n_blocks"] == 8
    # layer3.0 (block 4) changes width: its update is N/A; (a) is per stage
    assert rep["block_update_norms"][4] is None and rep["block_update_norms"][0] is not None
    fa = next(f for f in rep["flags"] if f["id"] == "a")
    assert "per stage" in fa["detail"]
    m64 = m.double().eval()
    hs = []
    h = m64.maxpool(m64.relu(m64.bn1(m64.conv1(x[:B].double()))))
    hs.append(h)
    for i in range(4):
        for blk in getattr(m64, f"layer{i + 1}"):
            h = blk(h)
            hs.append(h)
    gs = grads64(ce_loss(m64.fc(torch.flatten(m64.avgpool(h), 1)), y[:B]), hs)
    check_ab(rep, hs, gs)
    cr = run(run_cli, "credit", ck, sp)
    assert "dead_blocks" in cr["not_available"]
    assert all(r["rho"] is not None for r in cr["layers"])


def test_plain_mlp_with_changing_widths_is_na_not_exit_3(tmp_path, run_cli):
    torch.manual_seed(0)
    m = SM.PlainMLP()
    x, y = xy(4, 8)
    ck, sp = write_case(tmp_path, m, "stream_models:PlainMLP", {}, x, y,
                        {"embed": "inp", "blocks": "layers", "residual": "inside", "readout": ["out"]})
    rep = run(run_cli, "audit", ck, sp)
    assert rep["block_update_norms"] == [None, None]
    ff = next(f for f in rep["flags"] if f["id"] == "f")
    assert ff["flagged"] is None and "N/A" in ff["detail"]
    cr = run(run_cli, "credit", ck, sp)
    assert "dead_blocks" in cr["not_available"]


# -- stream: auto ------------------------------------------------------------------------------------

def test_stream_auto_finds_the_block_list_or_names_candidates(tmp_path, run_cli):
    out, _, x, y = _resmlp_pair()
    ck, sp = write_case(tmp_path, out, "stream_models:UserResMLP", {}, x, y, "auto")
    rep = run(run_cli, "audit", ck, sp)
    st = rep["data"]["stream"]
    assert st["source"].startswith("auto:") and "'layers'" in st["source"] and st["residual"] == "outside"
    from fadiag.errors import SpecError
    from fadiag.models.presets import auto_stream

    two = torch.nn.Module()
    two.a = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)])
    two.b = torch.nn.ModuleList([torch.nn.Tanh() for _ in range(3)])
    with pytest.raises(SpecError, match=r"2 candidate block lists \(a \(2 x Linear\), b \(3 x Tanh\)\)"):
        auto_stream(two)


# -- the view's other passes: the graph cut for DFA, module capture for edges ----------------------

def _dfa_grads_by_hand(m, x, y, fb):
    """The DFA step written out (the reference training.train_dfa replaced): h_0 = inp(x); each block on a
    detached input; ln_f/fc_out on a detached h_L; h_0 and every block output get e @ B_l."""
    h0 = m.inp(x)
    outs, h = [h0], h0.detach()
    for blk in m.layers:
        f = blk.f(h)
        outs.append(f)
        h = (h + f).detach()
    logits = m.fc_out(m.ln_f(h))
    return logits, outs


def _param_grads(m, logits, outs, y, fb):
    m.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(logits, y).backward()
    e = (logits.detach().softmax(-1) - torch.nn.functional.one_hot(y, 3).double()) / len(y)
    for l, o in enumerate(outs):
        o.backward(e @ fb[l])
    return {k: p.grad.clone() for k, p in m.named_parameters()}


@pytest.mark.parametrize("inside", [False, True])
def test_local_forward_gives_the_dfa_graph_of_a_by_hand_step(inside):
    from fadiag.stream import Stream, StreamView

    out, ins, x, y = _resmlp_pair()
    m = (ins if inside else out).double()
    x = x[:B].double()
    y = y[:B]
    fb = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    view = StreamView(m, Stream(blocks=("layers.0", "layers.1", "layers.2"), embed="inp",
                                residual="inside" if inside else "outside", readout=("ln_f", "fc_out")))
    lg, outs = view.local_forward(x)
    want_lg, want_outs = _dfa_grads_by_hand(m, x, y, fb)
    torch.testing.assert_close(lg, want_lg, rtol=1e-12, atol=1e-12)
    for a, b in zip(outs, want_outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    got = _param_grads(m, lg, outs, y, fb)
    want = _param_grads(m, *_dfa_grads_by_hand(m, x, y, fb), y, fb)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-14, msg=k)


def test_local_forward_needs_a_readout_it_can_cut():
    from fadiag.errors import SpecError
    from fadiag.stream import Stream, StreamView

    out, _, x, _ = _resmlp_pair()
    with pytest.raises(SpecError, match="local_forward"):
        StreamView(out, Stream(blocks=("layers.0",), residual="outside")).local_forward(x)


@pytest.mark.parametrize("where", ["pre", "post"])
def test_capture_modules_against_a_float64_loop_and_edges_capture(where):
    """capture_modules on the blocks' norms: the norm's input (the stream h_l) or output and d(mean CE)/d it,
    against a hand-written float64 pass; and on a GSNN exactly what edges' capture_block_signals returns."""
    from fadiag.diagnostics.edges import capture_block_signals
    from fadiag.models.gsnn import GSNN
    from fadiag.stream import capture_modules

    out, _, x, y = _resmlp_pair()
    m = out.double()
    x64, y = x[:B].double(), y[:B]
    for p in m.parameters():
        p.requires_grad_(False)
    acts, grads, loss = capture_modules(m, x64, lambda z: torch.nn.functional.cross_entropy(z, y),
                                        [blk.norm for blk in m.layers], where)
    assert all(not p.requires_grad and p.grad is None for p in m.parameters())
    with torch.enable_grad():
        cur, taps = m.inp(x64).detach().requires_grad_(True), []
        for blk in m.layers:  # OutsideBlock by hand: h + fc2(tanh(fc1(norm(h))))
            n = blk.norm(cur)
            taps.append(cur if where == "pre" else n)
            cur = cur + blk.fc2(torch.tanh(blk.fc1(n)))
        ref_loss = torch.nn.functional.cross_entropy(m.fc_out(m.ln_f(cur)), y)
        ref_g = torch.autograd.grad(ref_loss, taps)
    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-12)
    for a, g, ra, rg in zip(acts, grads, taps, ref_g):
        torch.testing.assert_close(a, ra.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g, rg, rtol=1e-10, atol=1e-14)

    torch.manual_seed(0)
    gs = GSNN(in_dim=4, out_dim=3, n_nodes=3, channels_per_node=2, depth=2, edges=[[0, 1], [1, 2]])
    xg = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    yg = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    a1, g1, l1 = capture_block_signals(gs, xg, yg, where=where)
    a2, g2, l2 = capture_modules(gs, xg, lambda z: torch.nn.functional.cross_entropy(z, yg),
                                 [b.norm for b in gs.blocks], where)
    assert torch.equal(a1, torch.stack(a2)) and torch.equal(g1, torch.stack(g2)) and l1 == l2
