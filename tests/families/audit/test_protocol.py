"""The four-diagnostic protocol (docs/science.md §1) against slow, obviously-correct references.

References run SEPARATE passes on a float64 copy of the model: per-sample Python loops for the norms
(math.sqrt of a sum of squares, statistics.median_low: torch.median's lower median, the reference's), one autograd.grad pass per layer for g_l, and an
explicit double loop over batch pairs for (c). fadiag runs its one float32 pass per batch; agreement to
~1e-4 relative is what float32 vs float64 allows, and every wrong reading of the formula (mean instead
of median, x.norm(-1), summed loss, wrong layer, mean token instead of class token) misses by far more.
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics

import pytest
import torch
import torch.nn.functional as F

import fadiag
from fadiag.families.audit.api import audit
from fadiag.diagnostics import protocol as P
from fadiag.diagnostics.audit_quantities import NAMES
from fadiag.errors import InputError, ThresholdError

from conftest import TINY_ARGS, tiny_data

F64 = torch.float64
REL = 1e-4


# ------------------------------------------------------------------------------------ slow references

def _is_vit(model) -> bool:
    return hasattr(model, "patch_embed")


def _embed(model, x):
    if _is_vit(model):
        return model.patch_embed(x.view(x.shape[0], model.in_chans, model.image_size, model.image_size))
    return model.embed(x.flatten(1))


def _terminal(model, h):
    if _is_vit(model):
        return model.head(model.norm(h)[:, 0])
    return model.out_head(model.out_ln(h))


def _rows(h):
    """Per-sample vectors as Python lists: the class token for (B, T, d)."""
    return (h[:, 0] if h.dim() == 3 else h).tolist()


def _slow_norm(row) -> float:
    return math.sqrt(sum(v * v for v in row))


def ref_hiddens(model64, x):
    """A separate float64 forward pass, block by block: [h_0..h_L] as full tensors."""
    with torch.no_grad():
        h = _embed(model64, x.to(F64))
        hs = [h]
        for blk in model64.blocks:
            h = h + blk(h)
            hs.append(h)
    return hs


def ref_residual_norms(model64, x) -> list:
    return [statistics.median_low(_slow_norm(r) for r in _rows(h)) for h in ref_hiddens(model64, x)]


def ref_grad(model64, x, y, layer: int):
    """g_layer = d(mean CE)/dh_layer from its own float64 pass, with h_layer made a leaf."""
    with torch.enable_grad():
        h = _embed(model64, x.to(F64))
        for blk in model64.blocks[:layer]:
            h = h + blk(h)
        leaf = h.detach().clone().requires_grad_(True)
        h = leaf
        for blk in model64.blocks[layer:]:
            h = h + blk(h)
        loss = F.cross_entropy(_terminal(model64, h), y)
        (g,) = torch.autograd.grad(loss, leaf)
    return g


def ref_bp_grad_norms(model64, x, y) -> list:
    return [statistics.median_low(_slow_norm(r) for r in _rows(ref_grad(model64, x, y, l)))
            for l in range(len(model64.blocks) + 1)]


def ref_stability(model64, batches, layer: int) -> float:
    dirs = []
    for x, y in batches:
        rows = _rows(ref_grad(model64, x, y, layer))
        mean = [sum(col) / len(rows) for col in zip(*rows)]
        n = _slow_norm(mean)
        dirs.append([v / n for v in mean] if n > 0 else mean)
    dots = [sum(a * b for a, b in zip(dirs[i], dirs[j])) for i, j in itertools.combinations(range(len(dirs)), 2)]
    return sum(dots) / len(dots)


def ref_accuracy(model64, batches) -> float:
    correct = total = 0
    with torch.no_grad():
        for x, y in batches:
            logits = _terminal(model64, ref_hiddens(model64, x)[-1])
            for row, label in zip(logits.tolist(), y.tolist()):
                correct += int(max(range(len(row)), key=row.__getitem__) == label)
                total += 1
    return correct / total


def flag(rep, fid):
    (f,) = [f for f in rep.flags if f.id == fid]
    return f


#: Odd batch size for the reference comparisons: the textbook median and torch's lower median agree there.
#: The even case is pinned separately (test_median_of_even_batch_is_the_lower_median).
ODD_BATCH = 15


@pytest.fixture
def tiny(tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(batch_size=ODD_BATCH)
    subject = fadiag.load(str(files.ckpt))
    model64 = copy.deepcopy(subject.model).double().eval()
    return files, subject, model64


# ------------------------------------------------------------------------------- (a), (b), (c), acc

def test_residual_norms_match_slow_reference(tiny):
    files, subject, model64 = tiny
    rep = audit(subject)
    x0, _ = files.batches()[0]
    ref = ref_residual_norms(model64, x0)
    assert len(rep.residual_norms) == TINY_ARGS["depth"] + 1
    assert rep.residual_norms == pytest.approx(ref, rel=REL)
    # The first batch only: the norms of another batch differ by more than the tolerance.
    other = ref_residual_norms(model64, files.batches()[1][0])
    assert rep.residual_norms != pytest.approx(other, rel=1e-2)


def test_median_of_even_batch_is_the_lower_median(tiny_resmlp_ckpt):
    """torch.median's lower median by default (the reference's), named in the report; midpoint on request."""
    files = tiny_resmlp_ckpt()  # batch size 16
    subject = fadiag.load(str(files.ckpt))
    model64 = copy.deepcopy(subject.model).double().eval()
    rep = audit(subject)
    x0, y0 = files.batches()[0]
    assert x0.shape[0] == 16
    assert rep.median == "lower" and rep.to_dict()["median"] == "lower"
    assert rep.residual_norms == pytest.approx(ref_residual_norms(model64, x0), rel=REL)
    assert rep.bp_grad_norms == pytest.approx(ref_bp_grad_norms(model64, x0, y0), rel=REL)
    mid = audit(subject, median="midpoint")
    assert mid.to_dict()["median"] == "midpoint"
    ref_mid = [statistics.median(_slow_norm(r) for r in _rows(h)) for h in ref_hiddens(model64, x0)]
    assert mid.residual_norms == pytest.approx(ref_mid, rel=REL)
    assert mid.residual_norms != pytest.approx(rep.residual_norms, rel=1e-6)  # the two conventions differ here
    with pytest.raises(InputError):
        audit(subject, median="upper")


def test_median_conventions_unit():
    v = torch.tensor([4.0, 1.0, 3.0, 2.0])
    assert P.median(v, "lower") == 2.0 == float(torch.median(v))
    assert P.median(v, "midpoint") == 2.5
    assert P.median(torch.tensor([3.0, 1.0, 2.0]), "lower") == 2.0
    assert math.isnan(P.median(torch.tensor([1.0, float("nan")]), "lower"))
    with pytest.raises(ValueError):
        P.median(v, "upper")


def test_median_row_norms_unit():
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])  # norms 5, 1, 10 -> median 5 (not norm(-1))
    assert P.median_row_norms(x) == 5.0
    x_nan = torch.tensor([[3.0, 4.0], [float("nan"), 1.0], [6.0, 8.0]])
    assert math.isnan(P.median_row_norms(x_nan))


def test_bp_grad_norms_match_slow_reference(tiny):
    files, subject, model64 = tiny
    rep = audit(subject)
    x0, y0 = files.batches()[0]
    ref = ref_bp_grad_norms(model64, x0, y0)
    assert rep.bp_grad_norms == pytest.approx(ref, rel=REL)
    # mean CE, not summed CE: the summed version is B = 16 times larger.
    assert rep.bp_grad_norms[-1] < ref[-1] * 1.01
    assert flag(rep, "b").value == pytest.approx(ref[-1], rel=REL)


def test_cross_batch_stability_matches_double_loop(tiny):
    files, subject, model64 = tiny
    rep = audit(subject)
    assert rep.stability_layer == max(1, (TINY_ARGS["depth"] + 1) // 2) == 2
    ref = ref_stability(model64, files.batches(), 2)
    assert rep.cross_batch_stability == pytest.approx(ref, abs=1e-5)
    # another layer gives a different number: the layer choice matters
    assert abs(ref_stability(model64, files.batches(), 0) - ref) > 1e-3


def test_stability_layer_override(tiny):
    files, subject, model64 = tiny
    rep = audit(subject, stability_layer=1)
    assert rep.stability_layer == 1
    assert rep.cross_batch_stability == pytest.approx(ref_stability(model64, files.batches(), 1), abs=1e-5)
    with pytest.raises(InputError, match="out of range"):
        audit(subject, stability_layer=TINY_ARGS["depth"] + 1)


def test_accuracy_matches_loop(tiny):
    files, subject, model64 = tiny
    rep = audit(subject)
    assert rep.headline_acc == ref_accuracy(model64, files.batches())
    assert rep.headline_acc_source == "computed"
    assert audit(subject, headline_acc=0.9).headline_acc == 0.9


def test_growth_ratio_both_modes(tiny):
    files, subject, model64 = tiny
    r = ref_residual_norms(model64, files.batches()[0][0])
    to_h0 = max(r[l] / r[0] for l in range(len(r)))
    per_block = max(r[l + 1] / r[l] for l in range(len(r) - 1))
    assert abs(to_h0 - per_block) > 0.05  # the seed is chosen so that the two modes disagree

    rep = audit(subject)
    assert rep.growth_mode == "ratio_to_h0"
    assert rep.growth == pytest.approx(to_h0, rel=REL)
    rep_b = audit(subject, growth_mode="per_block")
    assert rep_b.growth_mode == "per_block"
    assert rep_b.growth == pytest.approx(per_block, rel=REL)

    # A ratio threshold between the two: only ratio_to_h0 flags (a).
    mid = {"h_norm_explosion_ratio": (to_h0 + per_block) / 2}
    assert flag(audit(subject, thresholds=mid), "a").flagged is True
    assert flag(audit(subject, thresholds=mid, growth_mode="per_block"), "a").flagged is False
    assert audit(subject, thresholds=mid).verdict == "needs walk-back: residual stream exploded"

    with pytest.raises(InputError):
        audit(subject, growth_mode="ratio")


def test_growth_mode_from_spec(tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(spec_overrides={"audit": {"growth": "per_block"}})
    rep = audit(fadiag.load(str(files.ckpt)))
    r = rep.residual_norms
    assert rep.growth_mode == "per_block"
    assert rep.growth == pytest.approx(max(r[i + 1] / r[i] for i in range(len(r) - 1)), rel=1e-12)


@pytest.mark.parametrize("norms, mode, value, layer", [
    ([2.0, 4.0, 1.0, 6.0], "ratio_to_h0", 3.0, 3),
    ([2.0, 4.0, 1.0, 6.0], "per_block", 6.0, 3),
    ([2.0, 8.0, 4.0, 5.0], "per_block", 4.0, 1),
    ([2.0, 1.0, 1.0], "ratio_to_h0", 1.0, 0),
])
def test_growth_ratio_unit(norms, mode, value, layer):
    assert P.growth_ratio(norms, mode) == (pytest.approx(value), layer)


def test_growth_ratio_zero_h0_is_inf():
    assert P.growth_ratio([0.0, 1.0, 2.0], "ratio_to_h0") == (math.inf, 1)


def test_growth_ratio_degenerate():
    assert P.growth_ratio([0.0, 1.0, 2.0], "per_block") == (math.inf, 1)
    assert math.isnan(P.growth_ratio([1.0, float("nan"), 2.0], "ratio_to_h0")[0])
    assert math.isnan(P.growth_ratio([1.0, float("inf"), 2.0], "per_block")[0])


# ------------------------------------------------------------------------------ degenerate inputs

def _set(key, value):
    def edit(sd):
        sd[key].fill_(value)
    return edit


def test_nan_weights_never_pass(tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(edit=_set("blocks.1.fc2.weight", float("nan")))
    rep = audit(fadiag.load(str(files.ckpt)))
    assert rep.verdict != "trustworthy"
    for fid in ("a", "b", "e"):
        assert flag(rep, fid).flagged is True, fid
    assert "residual stream exploded" in rep.verdict and "BP grad at numerical floor" in rep.verdict
    assert rep.nonfinite_count > 0
    d = rep.to_dict()
    assert d["residual_norms"][0] is not None and d["residual_norms"][-1] is None  # NaN -> null
    assert flag(rep, "a").value is None and flag(rep, "b").value is None


def test_nan_weights_cli_json_has_no_nan(tiny_resmlp_ckpt, run_cli):
    import json

    files = tiny_resmlp_ckpt(edit=_set("blocks.1.fc2.weight", float("nan")))
    code, out, err = run_cli(["audit", files.ckpt, "--format", "json"])
    assert code == 1
    assert "NaN" not in out and "Infinity" not in out
    d = json.loads(out)
    assert d["residual_norms"][-1] is None
    assert {f["id"] for f in d["flags"] if f["flagged"]} >= {"a", "b", "e"}


def test_inf_weights_never_pass(tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(edit=_set("blocks.2.fc2.bias", float("inf")))
    rep = audit(fadiag.load(str(files.ckpt)))
    assert rep.verdict != "trustworthy"
    assert flag(rep, "a").flagged is True
    assert flag(rep, "e").flagged is True
    assert rep.to_dict()["residual_norms"][-1] is None  # inf -> null in JSON


def _zero_embedding(sd):
    sd["embed.weight"].zero_()
    sd["embed.bias"].zero_()


@pytest.mark.parametrize("mode", ["ratio_to_h0", "per_block"])
def test_zero_embedding_flags_a(tiny_resmlp_ckpt, mode):
    files = tiny_resmlp_ckpt(edit=_zero_embedding)
    rep = audit(fadiag.load(str(files.ckpt)), growth_mode=mode)
    assert rep.residual_norms[0] == 0.0 and rep.residual_norms[1] > 0
    assert flag(rep, "a").flagged is True and flag(rep, "a").value is None
    assert flag(rep, "e").flagged is False  # nothing non-finite: (a) flags on its own
    assert rep.verdict.startswith("needs walk-back: residual stream exploded")


@pytest.mark.parametrize("mode", [
    "ratio_to_h0",
    "per_block",
])
def test_zero_embedding_detail_says_ratio_undefined(tiny_resmlp_ckpt, mode):
    files = tiny_resmlp_ckpt(edit=_zero_embedding)
    fa = flag(audit(fadiag.load(str(files.ckpt)), growth_mode=mode), "a")
    assert "undefined" in fa.detail and "h_0" in fa.detail


def test_one_batch_is_an_input_error(tiny, run_cli):
    files, subject, _ = tiny
    subject.batches = subject.batches[:1]
    with pytest.raises(InputError, match="at least 2"):
        audit(subject)
    code, out, err = run_cli(["audit", files.ckpt, "--batches", "1"])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "at least 2" in err


def test_zero_gradient_direction_stays_zero():
    g = torch.zeros(5, 2)
    d = P.batch_mean_direction(g)
    assert torch.equal(d, torch.zeros(2, dtype=F64))
    u = P.batch_mean_direction(torch.tensor([[3.0, 0.0], [3.0, 4.0 * 2]]))  # mean (3, 4) -> (0.6, 0.8)
    assert u.tolist() == pytest.approx([0.6, 0.8])
    assert P.cross_batch_stability([d, u, u]) == pytest.approx((0 + 0 + 1) / 3)
    with pytest.raises(ValueError):
        P.cross_batch_stability([u])


def test_zero_gradient_end_to_end(tiny_resmlp_ckpt):
    """A zero head weight makes every g_l exactly 0: stability is 0 (not NaN), (b) flags, (e) does not."""
    files = tiny_resmlp_ckpt(edit=_set("out_head.weight", 0.0))
    rep = audit(fadiag.load(str(files.ckpt)))
    assert rep.bp_grad_norms == [0.0] * (TINY_ARGS["depth"] + 1)
    assert rep.cross_batch_stability == 0.0
    assert flag(rep, "b").flagged is True and flag(rep, "c").flagged is False
    assert flag(rep, "e").flagged is False and rep.nonfinite_count == 0


def test_half_precision_checkpoint_is_audited_in_float32(tiny_resmlp_ckpt):
    """fp16 weights are upcast before the pass (docs/science.md §2 pitfall 3): same numbers as the fp32 copy of
    the rounded weights, and the stored dtype is recorded."""
    def to_half(sd):
        for k in sd:
            sd[k] = sd[k].half()

    half = tiny_resmlp_ckpt(name="half", edit=to_half, batch_size=ODD_BATCH)
    rep = audit(fadiag.load(str(half.ckpt)))
    assert rep.weight_dtypes == ["float16"]
    ref_sd = {k: v.float() for k, v in half.state_dict.items()}
    model = half.build_model()
    model.load_state_dict(ref_sd)
    model64 = model.double()
    x0, y0 = half.batches()[0]
    assert rep.residual_norms == pytest.approx(ref_residual_norms(model64, x0), rel=REL)
    assert rep.bp_grad_norms == pytest.approx(ref_bp_grad_norms(model64, x0, y0), rel=REL)
    assert rep.nonfinite_count == 0


# -------------------------------------------------------------------------------------- (d)

def test_depth_utility_skipped_without_baseline(tiny):
    _, subject, _ = tiny
    rep = audit(subject)
    fd = flag(rep, "d")
    assert fd.flagged is None and fd.value is None and "skipped" in fd.detail
    assert rep.frozen_baseline_acc is None and rep.verdict == "trustworthy"


def test_depth_utility_flags_below_margin(tiny):
    files, subject, model64 = tiny
    acc = ref_accuracy(model64, files.batches())
    low = audit(subject, frozen_baseline_acc=acc - 0.01)  # +1 pp < 2 pp
    fd = flag(low, "d")
    assert fd.flagged is True and fd.value == pytest.approx(1.0, abs=1e-9)
    assert low.verdict == "needs walk-back: deep blocks fail to beat frozen-random baseline"
    ok = audit(subject, frozen_baseline_acc=acc - 0.05)  # +5 pp
    assert flag(ok, "d").flagged is False and flag(ok, "d").value == pytest.approx(5.0, abs=1e-9)
    worse = audit(subject, frozen_baseline_acc=min(1.0, acc + 0.1))
    assert flag(worse, "d").flagged is True and flag(worse, "d").value < 0
    with pytest.raises(InputError):
        audit(subject, frozen_baseline_acc=1.5)


def test_depth_utility_baseline_from_spec(tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(spec_overrides={"audit": {"frozen_baseline_acc": 0.99}})
    rep = audit(fadiag.load(str(files.ckpt)))
    assert rep.frozen_baseline_acc == 0.99 and rep.frozen_baseline_source == "spec"
    assert flag(rep, "d").flagged is True


def test_verdict_order_and_names():
    from fadiag.reports.base import Flag, verdict_of

    fl = [Flag(i, NAMES[i], True, 1.0, 1.0) for i in "dcba"]
    fl.sort(key=lambda f: f.id)
    assert verdict_of(fl) == ("needs walk-back: residual stream exploded; BP grad at numerical floor; "
                              "BP grad direction is drift-dominated; deep blocks fail to beat frozen-random baseline")
    assert verdict_of([Flag("a", NAMES["a"], False, 1.0, 1.0), Flag("d", NAMES["d"], None, None, 2.0)]) \
        == "trustworthy"


# ------------------------------------------------------------------------------------ thresholds

def test_threshold_from_spec(tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(spec_overrides={"audit": {"thresholds": {"g_norm_floor": 10.0}}})
    rep = audit(fadiag.load(str(files.ckpt)))
    assert rep.thresholds["g_norm_floor"] == 10.0
    assert rep.thresholds["h_norm_explosion_ratio"] == 50.0  # the others keep their defaults
    assert flag(rep, "b").flagged is True and flag(rep, "b").threshold == 10.0


def test_threshold_flag_beats_spec(tiny_resmlp_ckpt, run_cli):
    import json

    files = tiny_resmlp_ckpt(spec_overrides={"audit": {"thresholds": {"g_norm_floor": 10.0}}})
    code, out, _ = run_cli(["audit", files.ckpt, "-f", "json"])
    assert code == 1 and json.loads(out)["thresholds"]["g_norm_floor"] == 10.0
    code, out, _ = run_cli(["audit", files.ckpt, "-f", "json", "--threshold", "g_norm_floor=1e-12"])
    d = json.loads(out)
    assert code == 0 and d["thresholds"]["g_norm_floor"] == 1e-12 and d["verdict"] == "trustworthy"
    code, out, _ = run_cli(["audit", files.ckpt, "-f", "json", "-t", "g_norm_floor=1e-12",
                            "-t", "stability_drift_ceiling=-1"])
    assert code == 1 and json.loads(out)["verdict"] == "needs walk-back: BP grad direction is drift-dominated"


@pytest.mark.parametrize("item, needle", [
    ("g_norm_floor=nan", "finite"),
    ("h_norm_explosion_ratio=inf", "finite"),
    ("g_norm_floor=-1e-7", "positive"),
    ("h_norm_explosion_ratio=0", "positive"),
    ("g_norm_flor=1e-7", "g_norm_floor"),  # unknown name: suggests the nearest
    ("g_norm_floor=abc", "number"),
    ("g_norm_floor", "NAME=VALUE"),
])
def test_invalid_threshold_flag_exits_2_one_line(tiny_resmlp_ckpt, run_cli, item, needle):
    files = tiny_resmlp_ckpt()
    code, out, err = run_cli(["audit", files.ckpt, "--threshold", item])
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("thresholds, needle", [
    ({"g_norm_floor": -1.0}, "positive"),
    ({"g_norm_floor": "abc"}, "number"),
    ({"g_norm_flor": 1.0}, "did you mean 'g_norm_floor'"),
])
def test_invalid_threshold_in_spec(tiny_resmlp_ckpt, run_cli, thresholds, needle):
    files = tiny_resmlp_ckpt(spec_overrides={"audit": {"thresholds": thresholds}})
    with pytest.raises(ThresholdError, match=needle):
        audit(fadiag.load(str(files.ckpt)))
    code, out, err = run_cli(["audit", files.ckpt])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert str(files.spec) in err  # names the spec file


# ------------------------------------------------------------------------------ one pass, no side effects

def test_exactly_one_forward_and_backward_per_batch(tiny):
    _, subject, _ = tiny
    fwd, bwd = [], []
    h1 = subject.model.embed.register_forward_hook(lambda m, i, o: fwd.append(1))
    h2 = subject.model.out_head.register_full_backward_hook(lambda m, gi, go: bwd.append(1))
    try:
        audit(subject)
    finally:
        h1.remove()
        h2.remove()
    assert len(subject.batches) == 4
    assert len(fwd) == 4
    assert len(bwd) == 4


def test_audit_preserves_mode_and_grads(tiny):
    _, subject, _ = tiny
    model = subject.model
    model.train()
    params = dict(model.named_parameters())
    sentinel = torch.full_like(params["embed.weight"], 7.0)
    params["embed.weight"].grad = sentinel.clone()
    params["out_ln.weight"].requires_grad_(False)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    audit(subject)
    assert model.training is True and all(m.training for m in model.modules())
    assert torch.equal(params["embed.weight"].grad, sentinel)
    assert all(p.grad is None for k, p in params.items() if k != "embed.weight")
    assert params["out_ln.weight"].requires_grad is False
    assert all(p.requires_grad for k, p in params.items() if k != "out_ln.weight")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # eval stays eval
    model.eval()
    audit(subject)
    assert not any(m.training for m in model.modules())


def test_audit_preserves_mixed_submodule_modes(tiny):
    _, subject, _ = tiny
    model = subject.model
    model.train()
    model.blocks[0].eval()  # e.g. a frozen block whose norm/dropout must stay in eval
    audit(subject)
    assert model.training is True
    assert model.blocks[0].training is False


# ------------------------------------------------------------------------------------------ ViT

def test_vit_mini_uses_the_class_token(write_checkpoint):
    from fadiag.models.vit_mini import ViTMini

    args = {"image_size": 4, "patch_size": 2, "in_chans": 1, "dim": 8, "depth": 2, "heads": 2, "n_classes": 3}
    torch.manual_seed(0)
    model = ViTMini(**args)
    with torch.no_grad():  # a non-zero class token, so h_0[:, 0] is not just the position embedding
        model.patch_embed.cls_token.normal_()
    x, y = tiny_data(64, in_dim=16, n_classes=3, seed=5)
    files = write_checkpoint(model, "vit_mini", args, x, y, name="vit", batch_size=ODD_BATCH)
    subject = fadiag.load(str(files.ckpt))
    model64 = copy.deepcopy(subject.model).double().eval()
    rep = audit(subject)
    x0, y0 = files.batches()[0]
    ref = ref_residual_norms(model64, x0)
    assert len(rep.residual_norms) == 3
    assert rep.residual_norms == pytest.approx(ref, rel=REL)
    assert rep.bp_grad_norms == pytest.approx(ref_bp_grad_norms(model64, x0, y0), rel=1e-3)
    # not the whole token grid, not the token mean
    flat = [statistics.median(_slow_norm(r) for r in h.flatten(1).tolist()) for h in ref_hiddens(model64, x0)]
    mean_tok = [statistics.median(_slow_norm(r) for r in h.mean(1).tolist()) for h in ref_hiddens(model64, x0)]
    assert rep.residual_norms[0] != pytest.approx(flat[0], rel=0.05)
    assert rep.residual_norms[0] != pytest.approx(mean_tok[0], rel=0.05)
    assert rep.cross_batch_stability == pytest.approx(ref_stability(model64, files.batches(), 1), abs=1e-5)
    assert rep.headline_acc == ref_accuracy(model64, files.batches())
