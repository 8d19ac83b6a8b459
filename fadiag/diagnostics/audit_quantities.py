"""The audit's quantities, each declared once (docs/science.md §1): what it is called, its thresholds, what it
needs from the pass, how it is computed and when it flags. ``fadiag.families.audit.api.audit`` runs them; the threshold
defaults, names and validation, the JSON ``flags`` and the table/markdown/junit rows all follow from this list.

Adding a diagnostic is one more ``Quantity`` in ``QUANTITIES`` (plus its test and its docs/science.md line).

This module imports neither torch nor numpy (the CLI's help and ``fadiag compare`` read the metadata): the
compute steps import the tensor math of ``fadiag.diagnostics.protocol`` when they run.

What a quantity can need (``NEEDS``) is provided by the orchestrator from ONE stream pass per eval batch. A
compute step gets exactly its needs (and ``per_batch``: its own per-batch reductions, one per batch, when it
declares a ``per_batch`` step) and returns its values; the values named like an ``AuditReport`` field become
that field. The flag step sees the needs and the values, and the merged thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

from ..reports.base import Flag, Threshold
from .common import G_NORM_FLOOR

#: need -> what the orchestrator hands over.
NEEDS = {
    "hiddens": "h_0..h_L of the first eval batch, per sample (B, d)",
    "grads": "g_l = d(mean loss)/dh_l, l = 0..L, of the first eval batch (B, d)",
    "shapes": "the full shape of each h_l (a width change starts a new stage)",
    "token_norms": "token models: per h_l of the first eval batch, each sample's mean per-token norm (B,); else None",
    "stability_grads": "g_{l*} of every eval batch, l* = the stability layer",
    "logits": "every eval batch's logits",
    "labels": "every eval batch's labels",
    "weights": "the checkpoint's state dict",
    "headline_acc": "the headline accuracy (given, from the spec, or computed on the eval batches)",
    "frozen_baseline_acc": "the frozen-blocks baseline accuracy, or None",
    "growth_mode": "(a)'s variant: ratio_to_h0 or per_block",
    "median": "the median convention of per-layer numbers: lower or midpoint",
}


@dataclass(frozen=True)
class Quantity:
    """One audit diagnostic. ``compute(inputs) -> values``; ``flag(seen, thresholds) -> Flag`` where ``seen``
    is the inputs and the values together; ``per_batch(stream_pass) -> x`` (optional) is reduced on every
    batch of the pass and handed to compute as ``inputs["per_batch"]`` (a list, one x per batch)."""

    id: str
    name: str
    needs: tuple
    compute: Callable[[Mapping], dict]
    flag: Callable[[Mapping, Mapping], Flag]
    thresholds: tuple = ()
    per_batch: Callable | None = None
    min_batches: int = 1

    def __post_init__(self):
        unknown = [n for n in self.needs if n not in NEEDS]
        if unknown:
            raise ValueError(f"quantity ({self.id}) needs unknown input(s) {unknown}; known: {', '.join(NEEDS)}")

    def make_flag(self, flagged, value, threshold, detail: str) -> Flag:
        return Flag(self.id, self.name, flagged, value, threshold, detail)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


# ----------------------------------------------------------------------------------- (b) BP grad floor

def _bp_compute(i: Mapping) -> dict:
    from . import protocol as P

    return {"bp_grad_norms": P.norms_per_layer(i["grads"], i["median"])}


def _bp_flag(v: Mapping, t: Mapping) -> Flag:
    floor = t["g_norm_floor"]
    gL = v["bp_grad_norms"][-1] if v["bp_grad_norms"] else float("nan")
    if not _finite(gL):
        return BP_GRAD_FLOOR.make_flag(True, None, floor, "non-finite ||g_L||")
    return BP_GRAD_FLOOR.make_flag(gL < floor, gL, floor, f"||g_L|| = {gL:.3g}")


BP_GRAD_FLOOR = Quantity(
    "b", "BP grad at numerical floor", ("grads", "median"), _bp_compute, _bp_flag,
    (Threshold("g_norm_floor", G_NORM_FLOOR, positive=True,
               help="(b): a median ||g_L|| below it is numerical noise"),))


# ----------------------------------------------------------------------------------- (a) residual growth

def _growth_compute(i: Mapping) -> dict:
    from . import protocol as P

    pooled = P.norms_per_layer(i["hiddens"], i["median"])
    tn = i.get("token_norms")
    # token models: (a) reads the per-token norm, never the norm of a pooled (averaged) vector
    per_token = None if tn is None else [P.median(t, i["median"]) for t in tn]
    growth, layer, stages = P.stage_growth(pooled if tn is None else per_token, i["shapes"], i["growth_mode"])
    return {"residual_norms": pooled, "token_norms": per_token, "growth": growth, "growth_layer": layer,
            "stages": stages, "growth_statistic": "pooled" if tn is None else "per_token"}


def _growth_flag(v: Mapping, t: Mapping) -> Flag:
    ratio, growth, layer, mode = t["h_norm_explosion_ratio"], v["growth"], v["growth_layer"], v["growth_mode"]
    if growth == math.inf:
        flagged, value = True, None
        detail = ("||h_0|| = 0: the ratio is undefined (zero embedding)" if mode == "ratio_to_h0" else
                  f"||h_{layer - 1}|| = 0: the per-block ratio into layer {layer} is undefined "
                  "(a zero residual stream)")
    elif not _finite(growth):
        flagged, value, detail = True, None, "non-finite residual norm"
    else:
        what = "max_l |h_l|/|h_0|" if mode == "ratio_to_h0" else "max_l |h_{l+1}|/|h_l|"
        flagged, value, detail = growth > ratio, growth, f"{what} = {growth:.4g} at layer {layer}"
        if v.get("growth_statistic") == "per_token":
            detail += " (|h_l|: each token's norm, averaged over the tokens)"
    stages = v.get("stages") or ()
    if len(stages) > 1:  # a ratio across a width change compares different spaces
        detail += f" (per stage: {len(stages)} stages of equal shape, each against its first state)"
    return RESIDUAL_GROWTH.make_flag(flagged, value, ratio, detail)


RESIDUAL_GROWTH = Quantity(
    "a", "residual stream exploded", ("hiddens", "shapes", "growth_mode", "median", "token_norms"), _growth_compute,
    _growth_flag,
    (Threshold("h_norm_explosion_ratio", 50.0, positive=True,
               help="(a): flag when the residual norm grows by more than this factor"),))


# ----------------------------------------------------------------------------------- (c) cross-batch stability

def stability_detail(stability: float, ceiling: float) -> str:
    """(c)'s detail: what the number is, and when flagged, what it means and what to check next."""
    what = f"mean pairwise cosine of the batch-mean BP gradients = {stability:.4g}"
    if not stability > ceiling:
        return what
    return (f"{what} > {ceiling:g}: every batch pushes the same way (a shared drift direction). A healthy net "
            "trips this when it is not trained to convergence (its mean gradient is not yet zero), with few "
            "classes, or at a batch size far from the calibrated 128. Check whether (a), (b) or (d) also fire, "
            "whether the loss was still falling, and rerun with --batch-size 128 (docs/science.md §1)")


def _stability_compute(i: Mapping) -> dict:
    from . import protocol as P

    return {"cross_batch_stability": P.cross_batch_stability([P.batch_mean_direction(g)
                                                               for g in i["stability_grads"]])}


def _stability_flag(v: Mapping, t: Mapping) -> Flag:
    s, ceiling = v["cross_batch_stability"], t["stability_drift_ceiling"]
    if not _finite(s):
        return STABILITY.make_flag(True, None, ceiling, "non-finite stability")
    return STABILITY.make_flag(s > ceiling, s, ceiling, stability_detail(s, ceiling))


STABILITY = Quantity(
    "c", "BP grad direction is drift-dominated", ("stability_grads",), _stability_compute, _stability_flag,
    (Threshold("stability_drift_ceiling", 0.30, low=-1.0, high=1.0, rule="is a cosine ceiling in [-1, 1]",
               help="(c): flag when the batch-mean gradients agree more than this (mean pairwise cosine)"),),
    min_batches=2)


# ----------------------------------------------------------------------------------- (d) frozen baseline

def _margin_flag(v: Mapping, t: Mapping) -> Flag:
    acc, base, m = v["headline_acc"], v["frozen_baseline_acc"], t["frozen_acc_margin_pp"]
    if base is None:
        return FROZEN_MARGIN.make_flag(None, None, m, "skipped: no frozen-blocks baseline (--frozen-baseline-acc "
                                                      "or --frozen-baseline train)")
    if not (_finite(acc) and _finite(base)):
        return FROZEN_MARGIN.make_flag(True, None, m, "non-finite accuracy")
    margin = (acc - base) * 100.0
    return FROZEN_MARGIN.make_flag(margin < m, margin, m, f"{acc:.4f} vs frozen {base:.4f}: {margin:+.2f} pp")


FROZEN_MARGIN = Quantity(
    "d", "deep blocks fail to beat frozen-random baseline", ("headline_acc", "frozen_baseline_acc"),
    lambda i: {}, _margin_flag,
    (Threshold("frozen_acc_margin_pp", 2.0, low=-100.0, high=100.0, rule="is in percentage points, [-100, 100]",
               help="(d): flag when the headline beats the frozen-blocks baseline by fewer percentage points"),))


# ----------------------------------------------------------------------------------- (e) non-finite

def nonfinite_count(*tensors) -> int:
    """(e)'s count: NaN/Inf entries over tensors (or lists of them). The one definition: audit's (e) and credit's
    ``e`` flag count with it."""
    from .common import count_nonfinite

    return count_nonfinite(*tensors)


def _nonfinite_batch(sp) -> int:
    return nonfinite_count(sp.logits, sp.hiddens, sp.grads)


def _nonfinite_compute(i: Mapping) -> dict:
    return {"nonfinite_count": nonfinite_count(*i["weights"].values()) + sum(i["per_batch"])}


def _nonfinite_flag(v: Mapping, t: Mapping) -> Flag:
    n = v["nonfinite_count"]
    return NONFINITE.make_flag(n > 0, float(n), 0.0,
                               f"{n} non-finite value(s) in logits, hiddens, gradients or weights")


#: Beyond the reference: any NaN/Inf anywhere in the pass never passes silently.
NONFINITE = Quantity("e", "non-finite values in the forward/backward pass", ("weights",), _nonfinite_compute,
                     _nonfinite_flag, per_batch=_nonfinite_batch)


# ----------------------------------------------------------------------------------- (f) dead blocks

def dead_block_reading(hiddens: list, shapes: list, median: str | None = None) -> dict:
    """(f)'s reading, the one definition (audit's (f) and credit's ``dead_blocks`` flag): per block the median
    update norm (None for a block that changes the stream's shape: no identity path), whether every defined block
    adds at most DEAD_BLOCK_RATIO x ||h_l||, how many do, and the per-layer residual norms."""
    from . import protocol as P

    med = P.DEFAULT_MEDIAN if median is None else median
    upd = [u if shapes[l] == shapes[l + 1] else None for l, u in enumerate(P.block_update_norms(hiddens, med))]
    res = P.norms_per_layer(hiddens, med)
    all_dead, n_dead = P.dead_blocks(res, upd)
    return {"block_update_norms": upd, "all_dead": all_dead, "n_dead": n_dead, "ratio": P.DEAD_BLOCK_RATIO,
            "residual_norms": res}


def _dead_compute(i: Mapping) -> dict:
    r = dead_block_reading(i["hiddens"], i["shapes"], i["median"])
    return {k: r[k] for k in ("block_update_norms", "all_dead", "n_dead", "ratio")}


def _dead_flag(v: Mapping, t: Mapping) -> Flag:
    upd, n_dead = v["block_update_norms"], v["n_dead"]
    na = sum(u is None for u in upd)
    n_def = len(upd) - na
    why = f"; N/A for {na} block(s) that change the stream's shape" if na else ""
    return DEAD_BLOCKS.make_flag(v["all_dead"] if n_def else None, float(n_dead), float(n_def),
                                 f"{n_dead} of {n_def} block(s) add less than {v['ratio']:g} x ||h_l||{why}")


#: Beyond the reference: blocks that add nothing make (a)-(c) look healthy while depth is unused.
DEAD_BLOCKS = Quantity("f", "residual blocks contribute nothing", ("hiddens", "shapes", "median"), _dead_compute,
                       _dead_flag)


# ----------------------------------------------------------------------------------- the list

#: Every audit quantity. Flags are reported in id order; the thresholds in this list's order, which is why (b)
#: comes first: fadiag.audit/1's ``thresholds`` object has always started with g_norm_floor.
QUANTITIES = (BP_GRAD_FLOOR, RESIDUAL_GROWTH, STABILITY, FROZEN_MARGIN, NONFINITE, DEAD_BLOCKS)

#: Every declared threshold, in the JSON's order.
THRESHOLDS = tuple(t for q in QUANTITIES for t in q.thresholds)
DEFAULT_THRESHOLDS = {t.name: t.default for t in THRESHOLDS}
NAMES = {q.id: q.name for q in sorted(QUANTITIES, key=lambda q: q.id)}


def in_id_order(quantities=QUANTITIES) -> list:
    """The quantities in flag (id) order."""
    return sorted(quantities, key=lambda q: q.id)


def threshold_help() -> str:
    """The threshold names for ``--threshold``'s help: "g_norm_floor, h_norm_explosion_ratio, ..."."""
    return ", ".join(t.name for t in THRESHOLDS)
