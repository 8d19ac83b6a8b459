"""The first batch settles the view in its own pass (issue 25): residual auto found outside, and the module that
feeds block 0, cost no second forward when the model has no readout modules; the numbers equal those of a pass
on the settled view (what fadiag ran before: the batch again) at float32 tolerance."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from _tol import tol
from fadiag.stream import Stream, StreamView, expand_blocks, full_pass, settled_pass

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import stream_models as SM  # noqa: E402


def _view(model, residual: str, readout="model"):
    return StreamView(model, Stream(blocks=expand_blocks(model, "layers"), residual=residual, readout=readout,
                                    pool="cls", loss="ce"))


def _forwards(model) -> list:
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    return calls


@pytest.mark.parametrize("inside, readout, passes", [(False, "model", 1), (True, "model", 1),
                                                     (False, ("ln_f", "fc_out"), 2)])
def test_settling_costs_no_extra_pass_and_changes_no_number(inside, readout, passes):
    torch.manual_seed(0)
    model = SM.UserResMLP(inside=inside).eval()
    x, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    calls = _forwards(model)
    v, (logits, hs, grads, per, _) = settled_pass(_view(model, "auto", readout), x, y)
    assert len(calls) == passes
    assert v.settled and v.stream.residual == ("inside" if inside else "outside")
    if not inside:
        assert v.stream.embed == "inp" and any("embed 'inp'" in n for n in v.stream.notes)
    # the reference: a pass on the settled view (outside: h_L formed by the hooks, as the model forms it)
    want = full_pass(v, x, y)
    for got_l, want_l in zip(hs + grads + [logits, per], want[1] + want[2] + [want[0], want[3]]):
        torch.testing.assert_close(got_l, want_l, **tol("float32"))
    # and against the model itself: h_L is the last block's input plus its update
    h_last_in = model.inp(x)
    for blk in model.layers[:-1]:
        h_last_in = blk(h_last_in) if inside else h_last_in + blk(h_last_in)
    h_l = model.layers[-1](h_last_in) if inside else h_last_in + model.layers[-1](h_last_in)
    torch.testing.assert_close(hs[-1], h_l.detach(), **tol("float32"))


def test_declared_outside_finds_the_embed_in_the_same_pass():
    torch.manual_seed(1)
    model = SM.UserResMLP(inside=False).eval()
    calls = _forwards(model)
    v, _ = settled_pass(_view(model, "outside"), torch.randn(4, 8), torch.tensor([0, 1, 2, 0]))
    assert len(calls) == 1 and v.stream.embed == "inp"
