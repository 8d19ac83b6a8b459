"""The Python API behind the CLI: load a subject, run a family of diagnostics, get a report."""

from __future__ import annotations

import dataclasses
import math

from . import __version__
from .errors import InputError, ThresholdError
from .report import AuditReport
from .subject import Subject


def validate_thresholds(overrides: dict | None, base: dict | None = None, *, source: str = "--threshold") -> dict:
    """Merge threshold overrides onto the defaults; every value must be a finite number in range."""
    from .diagnostics.protocol import DEFAULT_THRESHOLDS

    out = dict(DEFAULT_THRESHOLDS)
    for layer in (base or {}), (overrides or {}):
        for k, v in layer.items():
            if not isinstance(k, str):
                raise ThresholdError(f"threshold names must be strings, got {k!r}", source=source)
            if k not in DEFAULT_THRESHOLDS:
                import difflib

                near = difflib.get_close_matches(k, list(DEFAULT_THRESHOLDS), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(DEFAULT_THRESHOLDS)})"
                raise ThresholdError(f"unknown threshold {k!r}{hint}", source=source)
            try:
                fv = float(v)
            except (TypeError, ValueError):
                raise ThresholdError(f"{k} must be a number, got {v!r}", source=source) from None
            if isinstance(v, bool) or not math.isfinite(fv):
                raise ThresholdError(f"{k} must be a finite number, got {v!r}", source=source)
            if k in ("g_norm_floor", "h_norm_explosion_ratio") and fv <= 0:
                raise ThresholdError(f"{k} must be positive, got {v!r}", source=source)
            if k == "stability_drift_ceiling" and not -1.0 <= fv <= 1.0:
                raise ThresholdError(f"{k} is a cosine ceiling in [-1, 1], got {v!r}", source=source)
            if k == "frozen_acc_margin_pp" and not -100.0 <= fv <= 100.0:
                raise ThresholdError(f"{k} is in percentage points, [-100, 100], got {v!r}", source=source)
            out[k] = fv
    return out


def audit(subject: Subject, *, thresholds: dict | None = None, headline_acc: float | None = None,
          frozen_baseline_acc: float | None = None, frozen_baseline_source: str | None = None,
          growth_mode: str | None = None, stability_layer: int | None = None, progress=None,
          median: str | None = None) -> AuditReport:
    """Run the four-diagnostic protocol (docs/science.md §1) with ONE forward+backward per eval batch.

    median: "lower" (torch.median, the reference's; the default) or "midpoint"; None takes audit.median."""
    import torch

    from .diagnostics import protocol as P
    from .stream import accuracy as stream_accuracy, stream_pass

    sp = subject.spec
    a = sp.audit
    th = validate_thresholds(thresholds, a.thresholds, source=f"{sp.origin}: audit.thresholds / --threshold")
    mode = growth_mode or a.growth
    if mode not in ("ratio_to_h0", "per_block"):
        raise InputError(f"growth mode must be ratio_to_h0 or per_block, got {mode!r}", source="--growth")
    med = median or a.median
    if med not in P.MEDIANS:
        raise InputError(f"median must be one of {', '.join(P.MEDIANS)}, got {med!r}", source="median")
    if len(subject.batches) < 2:
        raise InputError("the audit needs at least 2 disjoint eval batches for diagnostic (c); raise --batches "
                         "or data.batches", source=f"{sp.origin}: data.batches / --batches")

    # Non-finite weights are counted up front: they make every downstream number meaningless.
    nonfinite = sum(int((~torch.isfinite(v)).sum()) for v in subject.state_dict.values() if v.is_floating_point())
    first = None
    directions, logits, ys = [], [], []
    l_star = None
    view = subject.view
    for i, (x, y) in enumerate(subject.batches):
        sp_ = stream_pass(view, x, y, subject.device)
        view = subject._view = sp_.view  # settled on the first batch
        if first is None:
            first = sp_
            n = len(sp_.hiddens)
            l_star = stability_layer if stability_layer is not None else (
                a.stability_layer if a.stability_layer is not None else P.default_stability_layer(n))
            if not 0 <= l_star < n:
                where = "--stability-layer" if stability_layer is not None else f"{sp.origin}: audit.stability_layer"
                raise InputError(f"stability layer {l_star} out of range 0..{n - 1}", source=where)
        nonfinite += int((~torch.isfinite(sp_.logits)).sum())
        nonfinite += sum(int((~torch.isfinite(t)).sum()) for t in sp_.hiddens + sp_.grads)
        directions.append(P.batch_mean_direction(sp_.grads[l_star]))
        logits.append(sp_.logits)
        ys.append(y)
        if progress:
            progress(i + 1, len(subject.batches))

    residual_norms = P.norms_per_layer(first.hiddens, med)
    bp_grad_norms = P.norms_per_layer(first.grads, med)
    update_norms = [u if first.shapes[l] == first.shapes[l + 1] else None
                    for l, u in enumerate(P.block_update_norms(first.hiddens, med))]
    growth, growth_layer, stages = stage_growth(residual_norms, first.shapes, mode)
    stability = P.cross_batch_stability(directions)
    given_acc = headline_acc is not None
    given_fb = frozen_baseline_acc is not None
    if headline_acc is None and a.headline_acc is not None:
        headline_acc, acc_source = a.headline_acc, "spec"
    elif headline_acc is None:
        headline_acc, acc_source = stream_accuracy(logits, ys, view.stream.loss), "computed"
    else:
        acc_source = "given"
    if frozen_baseline_acc is None and a.frozen_baseline_acc is not None:
        frozen_baseline_acc, frozen_baseline_source = a.frozen_baseline_acc, "spec"
    for name, v, given, flag, key in (
            ("headline accuracy", headline_acc, given_acc, "--headline-acc", "audit.headline_acc"),
            ("frozen baseline accuracy", frozen_baseline_acc, given_fb, "--frozen-baseline-acc",
             "audit.frozen_baseline_acc")):
        if v is not None and not (0.0 <= v <= 1.0):
            raise InputError(f"{name} must be a fraction in [0, 1], got {v!r}",
                             source=flag if given else f"{sp.origin}: {key}")
    flags = P.evaluate_flags(
        residual_norms=residual_norms, bp_grad_norms=bp_grad_norms, growth=growth, growth_layer=growth_layer,
        growth_mode=mode, stability=stability, headline_acc=headline_acc,
        frozen_baseline_acc=frozen_baseline_acc, thresholds=th, nonfinite_count=nonfinite,
        update_norms=update_norms)
    if len(stages) > 1:  # (a) per stage: a ratio across a width change compares different spaces
        flags = [dataclasses.replace(f, detail=f"{f.detail} (per stage: {len(stages)} stages of equal shape, "
                                     f"each against its first state)") if f.id == "a" else f for f in flags]
    data = dict(subject.data_info)
    data["stream"] = view.stream.describe()
    return AuditReport(
        method_name=a.method_name or _guess_method(subject.path), notes=a.notes,
        residual_norms=residual_norms, bp_grad_norms=bp_grad_norms, block_update_norms=update_norms,
        stability_layer=l_star,
        cross_batch_stability=stability, headline_acc=headline_acc, frozen_baseline_acc=frozen_baseline_acc,
        verdict=P.verdict(flags), thresholds=th, flags=flags, checkpoint=subject.checkpoint.describe(),
        data=data, growth=growth, growth_mode=mode, headline_acc_source=acc_source,
        frozen_baseline_source=frozen_baseline_source if frozen_baseline_acc is not None else None,
        weight_dtypes=subject.weight_dtypes, nonfinite_count=nonfinite, spec=sp.origin,
        fadiag_version=__version__, median=med)


def stage_growth(residual_norms: list, shapes: list, mode: str) -> tuple:
    """(a)'s statistic per stage: maximal runs of layers whose states have the same shape, each against its
    own first state (ratio_to_h0) or its previous one (per_block); the max over stages and where it is.
    One stage (every block keeps the shape) is the plain statistic. Returns (value, layer, stages)."""
    from .diagnostics import protocol as P

    stages, start = [], 0
    for l in range(1, len(shapes) + 1):
        if l == len(shapes) or shapes[l] != shapes[start]:
            stages.append((start, l))
            start = l
    best = None
    for a, b in stages:
        if b - a < 2 and len(stages) > 1:
            continue
        v, where = P.growth_ratio(residual_norms[a:b], mode)
        cand = (v, where + a)
        if best is None or not math.isfinite(v) or (math.isfinite(best[0]) and v > best[0]):
            best = cand
            if not math.isfinite(v):
                break
    if best is None:
        best = P.growth_ratio(residual_norms, mode)
    return best[0], best[1], stages


def _guess_method(path: str) -> str:
    from pathlib import Path

    return Path(path).stem


def frozen_baseline(subject: Subject, *, seed: int = 0, progress=None, trainable_last: int = 0) -> tuple:
    """Train the architecture-matched frozen-blocks baseline (docs/science.md §1 (d)) and return (acc, source).

    Blocks frozen at a fresh init drawn with ``seed``; embedding, terminal norm and head trained with the BP
    recipe (fadiag.training.BP_RECIPE) on the spec's ``data.train_path``; accuracy on the eval batches.
    """
    import torch

    from .data import load_arrays
    from .models import build_model
    from .stream import StreamView, accuracy as stream_accuracy
    from .training import BP_RECIPE, train_frozen_baseline

    sp = subject.spec
    if not sp.data.train_path:
        raise InputError("--frozen-baseline train needs data.train_path in the spec (the training split)",
                         source=sp.origin)
    view = subject.view
    n_blocks = len(view.blocks)
    if not 0 <= trainable_last <= n_blocks:
        raise InputError(f"must be in 0..{n_blocks} (the model has {n_blocks} blocks), got {trainable_last}",
                         source="--trainable-blocks")
    from .subject import _lm_labels, _takes_tokens

    lm = _lm_labels(sp, subject.model)
    x, y = load_arrays(sp.resolve(sp.data.train_path), integer_labels="tokens" if lm else True,
                       keep_int=_takes_tokens(subject.model))
    torch.manual_seed(seed)
    model = build_model(sp.model.arch, sp.model.args, origin=sp.origin, base_dir=sp.base_dir)
    fview = StreamView(model, view.stream)  # the same paths on the fresh model
    train_frozen_baseline(model, x, y, BP_RECIPE, seed=seed, progress=progress, trainable_last=trainable_last,
                          view=fview)
    model.eval()
    with torch.no_grad():
        logits = [fview.call(xb) for xb, _ in subject.batches]
    acc = stream_accuracy(logits, [yb for _, yb in subject.batches], view.stream.loss)
    ladder = f", last {trainable_last} block(s) trainable" if trainable_last else ""
    return acc, f"trained: frozen blocks (seed {seed}){ladder}, BP recipe {BP_RECIPE}"
