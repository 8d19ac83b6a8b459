"""The Python API behind the CLI: load a subject, run a family of diagnostics, get a report."""

from __future__ import annotations

import dataclasses

from ... import __version__
from ...errors import InputError
from .report import AuditReport
from ...reports.base import merge_thresholds
from ...subject import Subject


def validate_thresholds(overrides: dict | None, base: dict | None = None, *, source: str = "--threshold") -> dict:
    """Merge threshold overrides onto the defaults; every value must be a finite number in its declared range
    (the audit quantities' ``Threshold`` objects, fadiag.diagnostics.audit_quantities)."""
    from ...diagnostics.audit_quantities import THRESHOLDS

    return merge_thresholds(THRESHOLDS, base, overrides, source=source)


#: AuditReport fields a quantity's compute step may fill (its values of the same name).
_FIELDS = frozenset(f.name for f in dataclasses.fields(AuditReport))


def audit(subject: Subject, *, thresholds: dict | None = None, headline_acc: float | None = None,
          frozen_baseline_acc: float | None = None, frozen_baseline_source: str | None = None,
          growth_mode: str | None = None, stability_layer: int | None = None, progress=None,
          median: str | None = None, calibration=None) -> AuditReport:
    """Run the audit's declared quantities (docs/science.md §1) with ONE forward+backward per eval batch.

    Each quantity of fadiag.diagnostics.audit_quantities.QUANTITIES says what it needs; the pass provides the
    union, each quantity computes its values from its needs and flags them; the report collects both.
    median: "lower" (torch.median, the reference's; the default) or "midpoint"; None takes audit.median.
    calibration: a fadiag.calibration.Calibration (default: the published one): its thresholds are the defaults
    under the spec's and ``thresholds``; every flag gets its ``calibration`` (fadiag.calibration.judge)."""
    from ...calibration import PUBLISHED
    from ...diagnostics.audit_quantities import QUANTITIES

    sp = subject.spec
    a = sp.audit
    cal = calibration or PUBLISHED
    th = validate_thresholds(thresholds, {**cal.thresholds, **a.thresholds},
                             source=f"{sp.origin}: audit.thresholds / --threshold / {cal.origin}")
    mode, med = _modes(sp, growth_mode, median)
    need = max(QUANTITIES, key=lambda q: q.min_batches)
    if len(subject.batches) < need.min_batches:
        raise InputError(f"the audit needs at least {need.min_batches} disjoint eval batches for diagnostic "
                         f"({need.id}); raise --batches or data.batches",
                         source=f"{sp.origin}: data.batches / --batches")
    computed = headline_acc is None and a.headline_acc is None
    keep = set().union(*(q.needs for q in QUANTITIES)) | ({"accuracy_counts"} if computed else set())
    inputs, per_batch, l_star = _stream(subject, QUANTITIES, keep, stability_layer, progress)
    acc = _accuracies(subject, inputs, headline_acc, frozen_baseline_acc, frozen_baseline_source)
    inputs.update(weights=subject.state_dict, growth_mode=mode, median=med, headline_acc=acc["headline_acc"],
                  frozen_baseline_acc=acc["frozen_baseline_acc"])
    fields, flags = {}, {}
    for q in QUANTITIES:
        given = {k: inputs[k] for k in q.needs}
        if q.per_batch is not None:
            given["per_batch"] = per_batch[q.id]
        values = q.compute(given)
        flags[q.id] = q.flag({**given, **values}, th)
        fields.update((k, v) for k, v in values.items() if k in _FIELDS)
    data = dict(subject.data_info)
    data["stream"] = subject.view.stream.describe()
    flags, cal_info = _calibrated(flags, cal, subject, inputs, given={**a.thresholds, **(thresholds or {})})
    fields.update(acc, flags=tuple(flags[k] for k in sorted(flags)), stability_layer=l_star, thresholds=th,
                  method_name=a.method_name or _guess_method(subject.path), notes=a.notes, growth_mode=mode,
                  checkpoint=subject.checkpoint.describe(), data=data, weight_dtypes=subject.weight_dtypes,
                  spec=sp.origin, fadiag_version=__version__, median=med, calibration=cal_info)
    from ...compat.biotorch import report_extra

    return AuditReport(**fields, extra=report_extra(subject))


def _calibrated(flags: dict, cal, subject: Subject, inputs: dict, given: dict) -> tuple:
    """(flags with their ``calibration``, the report's ``calibration``): the model's family and batch layout
    judged against each flag's calibration (fadiag.calibration); a threshold the spec or --threshold set is
    the user's, applied as given."""
    from ...calibration import judge, model_context, model_family

    sp, info = subject.spec, subject.data_info
    tokens = inputs["shapes"][0][1] if inputs.get("token_norms") is not None else None
    model = model_context(model_family(sp.model.arch, subject.model), info.get("batch_size"), info.get("batches"),
                          tokens)
    out = {}
    for fid, f in flags.items():
        c = cal.flags.get(fid)
        over = "--threshold / audit.thresholds" if c and c.threshold in given else None
        out[fid] = judge(f, c, model, cal, over)
    return out, {**cal.describe(), "model": model}


def _modes(sp, growth_mode: str | None, median: str | None) -> tuple:
    """(growth mode, median convention): the arguments, else the spec's audit section; checked."""
    from ...diagnostics.protocol import MEDIANS

    mode = growth_mode or sp.audit.growth
    if mode not in ("ratio_to_h0", "per_block"):
        raise InputError(f"growth mode must be ratio_to_h0 or per_block, got {mode!r}", source="--growth")
    med = median or sp.audit.median
    if med not in MEDIANS:
        raise InputError(f"median must be one of {', '.join(MEDIANS)}, got {med!r}", source="median")
    return mode, med


def _stream(subject: Subject, quantities, keep: set, stability_layer: int | None, progress) -> tuple:
    """ONE stream pass (fadiag.stream.stream_pass) per eval batch. Returns (inputs, per_batch, l*): the first
    batch's hiddens, grads and shapes, and of every batch what ``keep`` names (logits, labels, g_{l*}, and
    accuracy_counts: (correct, total), so no batch's logits outlive it); per_batch[q.id] holds quantity q's own
    per-batch reductions."""
    from ...stream import stream_pass
    from ...stream.spec import accuracy_counts

    lists = {k: [] for k in ("logits", "labels", "stability_grads", "accuracy_counts") if k in keep}
    per_batch = {q.id: [] for q in quantities if q.per_batch is not None}
    first = l_star = None
    for i, (x, y) in enumerate(subject.batches):
        p = stream_pass(subject.view, x, y, subject.device)
        subject._view = p.view  # settled on the first batch
        if first is None:
            l_star = _stability_layer(subject.spec, len(p.hiddens), stability_layer)
            first = {"hiddens": p.hiddens, "grads": p.grads, "shapes": p.shapes,  # not the first batch's logits
                     "token_norms": p.token_norms}
        for k, v in (("logits", p.logits), ("labels", y), ("stability_grads", p.grads[l_star])):
            if k in lists:
                lists[k].append(v.clone())  # not a view that keeps the batch's whole tensor alive
        if "accuracy_counts" in lists:
            lists["accuracy_counts"].append(accuracy_counts(p.logits, y, p.view.stream.loss,
                                                            bool(p.view.stream.labels_shifted)))
        for q in quantities:
            if q.per_batch is not None:
                per_batch[q.id].append(q.per_batch(p))
        del p
        if progress:
            progress(i + 1, len(subject.batches))
    return {**first, **lists}, per_batch, l_star


def _stability_layer(sp, n: int, given: int | None) -> int:
    """l* for (c): the argument, else audit.stability_layer, else max(1, (L+1)//2); in 0..L."""
    from ...diagnostics.protocol import default_stability_layer

    l_star = given if given is not None else (
        sp.audit.stability_layer if sp.audit.stability_layer is not None else default_stability_layer(n))
    if not 0 <= l_star < n:
        where = "--stability-layer" if given is not None else f"{sp.origin}: audit.stability_layer"
        raise InputError(f"stability layer {l_star} out of range 0..{n - 1}", source=where)
    return l_star


def _accuracies(subject: Subject, inputs: dict, headline_acc, frozen_baseline_acc, frozen_baseline_source) -> dict:
    """The headline and frozen-baseline accuracies and where each came from (given, spec, computed), checked."""
    from ...stream.spec import pooled_accuracy

    sp, a = subject.spec, subject.spec.audit
    given_acc, given_fb = headline_acc is not None, frozen_baseline_acc is not None
    if headline_acc is None and a.headline_acc is not None:
        headline_acc, acc_source = a.headline_acc, "spec"
    elif headline_acc is None:
        headline_acc = pooled_accuracy(inputs["accuracy_counts"])
        acc_source = "computed"
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
    return {"headline_acc": headline_acc, "headline_acc_source": acc_source, "frozen_baseline_acc":
            frozen_baseline_acc, "frozen_baseline_source":
            frozen_baseline_source if frozen_baseline_acc is not None else None}


def _guess_method(path: str) -> str:
    from pathlib import Path

    return Path(path).stem


def _read_first_batch(subject: Subject):
    """The subject's view with the first batch's readings made (logits, pooling, label shift, residual:
    fadiag.stream.readings), so a baseline trained before the audit reads the model the same way."""
    view = subject.view
    if not view.settled and subject.batches:
        from ...stream.passes import first_batch_view
        from ...stream.readings import read_shift

        x, y = subject.batches[0]
        view = read_shift(first_batch_view(view, x, subject.device), x.to(subject.device), y.to(subject.device))
        subject._view = view
    return view


def frozen_baseline(subject: Subject, *, seed: int = 0, progress=None, trainable_last: int = 0) -> tuple:
    """Train the architecture-matched frozen-blocks baseline (docs/science.md §1 (d)) and return (acc, source).

    Blocks frozen at a fresh init drawn with ``seed``; embedding, terminal norm and head trained with the BP
    recipe (fadiag.training.BP_RECIPE) on the spec's ``data.train_path``; accuracy on the eval batches.
    """
    import torch

    from ...data import load_arrays
    from ...models.construct import build_for_spec
    from ...stream import StreamView, accuracy as stream_accuracy
    from ...training import BP_RECIPE, train_frozen_baseline

    sp = subject.spec
    digits = not sp.data.train_path and sp.data.source == "digits"
    if not sp.data.train_path and not digits:
        raise InputError("--frozen-baseline train needs data.train_path in the spec (the training split)",
                         source=sp.origin)
    view = _read_first_batch(subject)
    if view.stream.logits_from == "probe":
        raise InputError("--frozen-baseline train with stream.readout: probe is not supported (the probe is fitted "
                         "to the trained blocks); pass --frozen-baseline-acc", source="--frozen-baseline")
    n_blocks = len(view.blocks)
    if not 0 <= trainable_last <= n_blocks:
        raise InputError(f"must be in 0..{n_blocks} (the model has {n_blocks} blocks), got {trainable_last}",
                         source="--trainable-blocks")
    from ...data import takes_tokens as _takes_tokens
    from ...subject import _lm_labels

    lm = _lm_labels(sp, subject.model)
    if digits:  # fadiag's own digits train split: never the eval rows (fadiag.data.digits)
        from ...data import digits as digits_split

        x, y = digits_split("train")
    else:
        x, y = load_arrays(sp.resolve(sp.data.train_path), integer_labels="tokens" if lm else True,
                           keep_int=_takes_tokens(subject.model))
    torch.manual_seed(seed)
    model = build_for_spec(sp, subject.checkpoint.content)[0]
    fview = StreamView(model, view.stream)  # the same paths on the fresh model
    train_frozen_baseline(model, x, y, BP_RECIPE, seed=seed, progress=progress, trainable_last=trainable_last,
                          view=fview)
    model.eval()
    with torch.no_grad():
        logits = [fview.call(xb) for xb, _ in subject.batches]
    acc = stream_accuracy(logits, [yb for _, yb in subject.batches], view.stream.loss, bool(view.stream.labels_shifted))
    ladder = f", last {trainable_last} block(s) trainable" if trainable_last else ""
    split = ", on fadiag's digits train split (1 437 rows)" if digits else ""
    return acc, f"trained: frozen blocks (seed {seed}){ladder}{split}, BP recipe {BP_RECIPE}"
