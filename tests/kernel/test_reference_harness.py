"""One reference harness for the audit's per-layer quantities (issue 11): a table of tiny seeded models x
degenerate inputs, every quantity checked through ONE function against a slow float64 reference that does
not use fadiag.stream (the model's own float64 forward, written out layer by layer).

Quantities (docs/science.md §1): residual_norms (a), bp_grad_norms (b), block_update_norms (f), growth
(a's statistic, ratio_to_h0), cross_batch_stability (c), and the non-finite count (e). fadiag runs the model
in float32 (reductions in float64), so the comparison is at float32 tolerance (tests/_tol.py).
"""

from __future__ import annotations

import itertools
import shutil
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

B, NB, D_IN = 8, 3, 8


# ------------------------------------------------------------------------------------- the table

def _builtin():
    from fadiag.models import build_model

    torch.manual_seed(0)
    args = {"in_dim": D_IN, "width": 6, "depth": 3, "n_classes": 3}
    m = build_model("resmlp", args)
    return m, "resmlp", args, None


def _user(inside: bool):
    def make():
        torch.manual_seed(0)
        m = SM.UserResMLP(d_in=D_IN, inside=inside)
        st = {"embed": "inp", "blocks": "layers", "residual": "inside" if inside else "outside",
              "readout": ["ln_f", "fc_out"], "pool": "none"}
        return m, "stream_models:UserResMLP", {"d_in": D_IN, "inside": inside}, st
    return make


MODELS = {"builtin resmlp": _builtin, "user ResMLP, residual outside": _user(False),
          "user ResMLP, residual inside": _user(True)}


def _x(kind: str):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B * NB, D_IN, generator=g)
    if kind == "zeros":
        return torch.zeros_like(x)  # every h_0 is the embedding's bias: identical rows
    if kind == "huge":
        return x * 1e4  # an exploded input: (a) must see it, norms stay exact relative to their scale
    if kind == "constant rows":
        return x[:1].expand_as(x).clone()  # every sample the same input
    return x


INPUTS = ("normal", "zeros", "huge", "constant rows")


# ----------------------------------------------------------------------------- the slow reference

def states64(model, x, stream):
    """h_0..h_L and the logits of the float64 copy, written out by hand for each model of the table."""
    m = model.double().eval()
    x = x.double()
    if stream is None:  # fadiag's built-in ResMLP: its own return_hidden contract
        logits, hs = m(x, return_hidden=True)
        return list(hs), logits
    h = m.inp(x)
    hs = [h]
    for blk in m.layers:
        h = blk(h) if stream["residual"] == "inside" else h + blk(h)
        hs.append(h)
    return hs, m.fc_out(m.ln_f(h))


def reference(model, x, y):
    """Every quantity of the table in float64 loops: per batch, lower medians (torch.median) of row norms."""
    import copy

    per_batch = []
    for b in range(NB):
        xb, yb = x[b * B:(b + 1) * B], y[b * B:(b + 1) * B]
        with torch.enable_grad():
            hs, logits = states64(copy.deepcopy(model), xb, model._stream)
            loss = torch.nn.functional.cross_entropy(logits, yb)
            gs = torch.autograd.grad(loss, hs)
        per_batch.append((hs, gs))
    hs, gs = per_batch[0]

    def med(ts):
        return [float(torch.median(t.reshape(t.shape[0], -1).norm(dim=1))) for t in ts]

    rn = med(hs)
    l_star = max(1, len(hs) // 2)
    dirs = []
    for _, g in per_batch:
        mean = g[l_star].mean(0)
        dirs.append(mean / mean.norm())
    pairs = list(itertools.combinations(range(NB), 2))
    return {"residual_norms": rn, "bp_grad_norms": med(gs),
            "block_update_norms": med([b - a for a, b in zip(hs, hs[1:])]),
            "growth": max(rn) / rn[0],
            "cross_batch_stability": sum(float(dirs[i] @ dirs[j]) for i, j in pairs) / len(pairs)}


def run_case(tmp_path, make, kind, *, poison: bool = False):
    """fadiag's audit of the case through the Python API, and the float64 reference of the same model."""
    import fadiag

    model, arch, args, stream = make()
    if poison:
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = float("nan")
    x = _x(kind)
    y = torch.randint(0, 3, (B * NB,), generator=torch.Generator().manual_seed(4))
    if kind == "constant rows":
        y = y[:B].repeat(NB)  # and every batch the same labels: identical batches
    torch.save({"model": model.state_dict()}, tmp_path / "m.pt")
    np.savez(tmp_path / "m_data.npz", x=x.numpy(), y=y.numpy())
    spec = {"model": {"arch": arch, "args": args},
            "data": {"source": "npz", "path": "m_data.npz", "batch_size": B, "batches": NB}}
    if stream is not None:
        spec["stream"] = stream
        shutil.copy(HERE / "stream_models.py", tmp_path / "stream_models.py")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    sys.path.insert(0, str(tmp_path))
    try:
        rep = fadiag.audit(fadiag.load(str(tmp_path / "m.pt"), str(tmp_path / "m.yaml")))
    finally:
        sys.path.remove(str(tmp_path))
    model._stream = stream
    return rep, model, x, y


# ------------------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("name", list(MODELS))
def test_every_quantity_equals_its_float64_reference(tmp_path, name, kind):
    rep, model, x, y = run_case(tmp_path, MODELS[name], kind)
    ref = reference(model, x, y)
    for key, want in ref.items():
        got = getattr(rep, key)
        # norms and their ratio are known to relative precision; (c) is a cosine: absolute 1e-6 near 0.
        # An update h_{l+1} - h_l is a difference of float32 states: it is known to float32 precision of
        # the stream it is taken from, not of itself (on the "huge" input |h| ~ 1e4 and |h_{l+1} - h_l| ~ 0.5;
        # (f)'s dead-block ratio of 1e-7 x ||h_l|| sits at that same floor, docs/science.md §1).
        kw = tol("float32") if key == "cross_batch_stability" else tol("float32", atol=0)
        if key == "block_update_norms":
            kw = {"rtol": kw["rtol"], "atol": kw["rtol"] * max(ref["residual_norms"])}
        np.testing.assert_allclose(got, want, **kw, err_msg=f"{name} / {kind}: {key}")
    assert rep.nonfinite_count == 0 and rep.flag("e").flagged is False
    if kind == "constant rows":  # identical batches: one direction, (c) = 1, over the ceiling; it flags where
        c = rep.flag("c")  # (c) is calibrated (resmlp at batch 128), else it is out of calibration
        assert rep.cross_batch_stability == pytest.approx(1.0, abs=1e-6) and c.calibration["crossed"]
        assert c.flagged == c.calibration["inside"] and rep.verdict.endswith(c.name)
    if kind == "huge":  # the residual stream is 1e4 times larger than with "normal": (a) is still exact
        assert rep.residual_norms[0] > 1e3


@pytest.mark.parametrize("name", list(MODELS))
def test_a_nan_weight_never_passes(tmp_path, name):
    rep, *_ = run_case(tmp_path, MODELS[name], "normal", poison=True)
    assert rep.nonfinite_count > 0 and rep.flag("e").flagged
    assert rep.flagged and rep.verdict.startswith("needs walk-back: ")
    assert rep.to_dict()["verdict"] == rep.verdict  # the JSON says the same
