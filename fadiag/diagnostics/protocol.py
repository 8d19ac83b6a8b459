"""The audit protocol's tensor math (docs/science.md §1), as pure functions of stream tensors.

(a) residual stream scale    median_b ||h_l||, flag max_l ||h_l|| / ||h_0|| > ratio (or per-block growth)
(b) reference validity       median_b ||g_l||, g = d(mean CE)/dh_l, flag ||g_L|| < floor
(c) direction stability      per batch gbar = unit(mean_b g_{l*}); mean pairwise dot over batch pairs > ceiling
(d) depth utility            (headline acc - frozen-blocks baseline acc) in pp < margin

Each diagnostic is declared once, with its thresholds and flag rule, in ``fadiag.diagnostics.audit_quantities``
(``DEFAULT_THRESHOLDS`` and ``NAMES`` live there). Defects of the reference fixed here: a non-finite
norm flags (never passes); ||h_0|| = 0 flags; one forward+backward per batch serves every diagnostic. All
reductions are in float64.

"median" is the reference's by default: ``torch.median``, the LOWER of the two middle values of an even
batch (convention "lower"); the textbook midpoint is available as convention "midpoint" (docs/science.md).
"""

from __future__ import annotations

import math
import torch


#: (f): a block is dead when its update is this small relative to the stream it adds to.
DEAD_BLOCK_RATIO = 1e-7


#: Median conventions: "lower" is torch.median's (the reference protocol's, the default); "midpoint" is the
#: textbook one (numpy, statistics.median).
MEDIANS = ("lower", "midpoint")
DEFAULT_MEDIAN = "lower"


def block_update_norms(hiddens: list, convention: str = DEFAULT_MEDIAN) -> list:
    """median_b ||h_{l+1} - h_l|| for l = 0..L-1: what each residual block adds (fadiag's (f)).
    None (N/A) for a block whose output shape differs from its input's (a width change: no identity path)."""
    return [median_row_norms(hiddens[l + 1].double() - hiddens[l].double(), convention)
            if hiddens[l + 1].shape == hiddens[l].shape else None for l in range(len(hiddens) - 1)]


def dead_blocks(residual_norms: list, update_norms: list) -> tuple:
    """(all_dead, n_dead): a block is dead when median ||h_{l+1} - h_l|| <= DEAD_BLOCK_RATIO * median ||h_l||
    (an exactly zero stream counts as dead too). NaN updates are not "dead": (e) reports them."""
    pairs = [(u, r) for u, r in zip(update_norms, residual_norms[:-1]) if u is not None]  # None: N/A
    dead = [u == 0.0 or (math.isfinite(u) and math.isfinite(r) and u <= DEAD_BLOCK_RATIO * r) for u, r in pairs]
    return (bool(dead) and all(dead)), sum(dead)


def median(v: torch.Tensor, convention: str = "midpoint") -> float:
    """Median of a 1-D tensor in float64. NaN if any entry is NaN (or the tensor is empty).

    convention "midpoint" (this function's default, kept for its callers outside the protocol): the mean of
    the two middle values for an even count, as numpy and statistics.median. "lower": the lower of the
    two, as torch.median and the reference protocol (what the audit uses by default).
    """
    if convention not in MEDIANS:
        raise ValueError(f"median convention must be one of {', '.join(MEDIANS)}, got {convention!r}")
    v = v.double().flatten()
    if v.numel() == 0 or torch.isnan(v).any():
        return float("nan")
    s = v.sort().values
    n = s.numel()
    if convention == "lower":
        return float(s[(n - 1) // 2])
    return float(s[n // 2]) if n % 2 else float((s[n // 2 - 1] + s[n // 2]) / 2)


def median_row_norms(x: torch.Tensor, convention: str = DEFAULT_MEDIAN) -> float:
    """Median over the batch of the per-sample L2 norm along features (never x.norm(-1)). x: (B, d)."""
    return median(x.double().norm(dim=-1), convention)


def norms_per_layer(xs: list, convention: str = DEFAULT_MEDIAN) -> list:
    """[median_b ||x_l||] for each layer (lower median by default, as the reference); xs: list of (B, d)."""
    return [median_row_norms(x, convention) for x in xs]


def growth_ratio(residual_norms: list, mode: str = "ratio_to_h0") -> tuple:
    """(a)'s statistic and the layer where it peaks.

    ratio_to_h0: max_l ||h_l|| / ||h_0||. per_block: max_l ||h_{l+1}|| / ||h_l||. A zero denominator gives
    +inf (flags), a non-finite norm gives NaN (flags). Returns (value, layer).
    """
    r = residual_norms
    if mode == "ratio_to_h0":
        pairs = [(r[l], r[0], l) for l in range(len(r))]
    elif mode == "per_block":
        pairs = [(r[l + 1], r[l], l + 1) for l in range(len(r) - 1)]
    else:
        raise ValueError(f"unknown growth mode {mode!r}")
    best, where = -math.inf, 0
    for num, den, l in pairs:
        if not (math.isfinite(num) and math.isfinite(den)):
            return float("nan"), l
        if den == 0:
            # A zero norm in the denominator: the ratio is undefined and flags. Report the first layer
            # where the stream is non-zero (where the "infinite" growth shows).
            if mode == "ratio_to_h0":
                l = next((k for k in range(1, len(r)) if r[k] > 0), l)
            return math.inf, l
        v = num / den
        if v > best:
            best, where = v, l
    return (best if pairs else float("nan")), where


def batch_mean_direction(g: torch.Tensor) -> torch.Tensor:
    """gbar = mean over samples of g (B, d), unit-normalised in float64; a zero vector stays zero."""
    m = g.double().mean(dim=0)
    n = m.norm()
    return m / n if n > 0 else m


def cross_batch_stability(directions: list) -> float:
    """Mean pairwise dot product of the unit batch-mean gradients over all batch pairs i < j.

    Needs at least 2 batches (raises ValueError otherwise).
    """
    k = len(directions)
    if k < 2:
        raise ValueError("cross-batch stability needs at least 2 disjoint batches")
    G = torch.stack(directions)
    dots = G @ G.T
    iu = torch.triu_indices(k, k, offset=1)
    return float(dots[iu[0], iu[1]].mean())


def accuracy(logits_list: list, y_list: list) -> float:
    correct = sum(int((lg.argmax(dim=-1) == y).sum()) for lg, y in zip(logits_list, y_list))
    total = sum(int(y.numel()) for y in y_list)
    return correct / total if total else float("nan")


def default_stability_layer(n_layers_plus_one: int) -> int:
    """l* = max(1, (L+1)//2) for hiddens h_0..h_L (n_layers_plus_one = L+1)."""
    return max(1, n_layers_plus_one // 2)


def stage_growth(residual_norms: list, shapes: list, mode: str) -> tuple:
    """(a)'s statistic per stage: maximal runs of layers whose states have the same shape, each against its
    own first state (ratio_to_h0) or its previous one (per_block); the max over stages and where it is.
    One stage (every block keeps the shape) is the plain statistic. Returns (value, layer, stages)."""
    stages, start = [], 0
    for l in range(1, len(shapes) + 1):
        if l == len(shapes) or shapes[l] != shapes[start]:
            stages.append((start, l))
            start = l
    best = None
    for a, b in stages:
        if b - a < 2 and len(stages) > 1:
            continue
        v, where = growth_ratio(residual_norms[a:b], mode)
        cand = (v, where + a)
        if best is None or not math.isfinite(v) or (math.isfinite(best[0]) and v > best[0]):
            best = cand
            if not math.isfinite(v):
                break
    if best is None:
        best = growth_ratio(residual_norms, mode)
    return best[0], best[1], stages
