"""``fadiag relevance``: per-feature, per-head relevance of a multi-head online learner (docs/science.md §4).

State-only tier (no forward pass): path-norm weight relevance, step-size and trace activity, normaliser
statistics, head reliance, head mean step size. Sensitivity tier (``sensitivity=True``): mean |Jacobian|
of each head w.r.t. the raw input over the eval rows, and, with ``observation``, the Jacobian at one
point. With ``relevance.truth`` in the spec, a check that each head's truly-used features rank above its
unused ones. Report: :class:`fadiag.families.relevance.report.RelevanceReport`, schema "fadiag.relevance/2"
(docs/json.md); the docs/science.md §4 layout sits under "trunk"/"per_head".

For daemons, ``fadiag.diagnostics.relevance.relevance_report(LearnerState)`` is the tens-of-µs path.
"""

from __future__ import annotations

import math

from ... import __version__
from ...diagnostics.common import count_nonfinite
from ...errors import InputError
from ...reports.base import Flag


def _rank_check(per_head_scores: dict, truth: dict, feature_names: list) -> dict:
    """Per head: min score over used features / max over unused (> 1 means the truth ranks first)."""
    out = {}
    for head, used in truth.items():
        scores = per_head_scores.get(head)
        if scores is None:
            raise InputError(f"relevance.truth names unknown head {head!r}", source="spec")
        bad = [f for f in used if f not in feature_names]
        if bad:
            raise InputError(f"relevance.truth.{head} names unknown feature(s) {bad}", source="spec")
        u = [scores[f] for f in used]
        n = [scores[f] for f in feature_names if f not in used]
        ratio = (min(u) / max(n)) if (n and max(n) > 0) else math.inf
        out[head] = {"used_min": min(u), "unused_max": max(n) if n else None, "ratio": ratio,
                     "ranked_first": bool(n) and min(u) > max(n) if n else True}
    return out


def relevance(subject, *, feature_names: list | None = None, head_names: list | None = None,
              sensitivity: bool = False, observation: str | None = None, step_size_kind: str = "auto"):
    """The relevance report (a :class:`fadiag.families.relevance.report.RelevanceReport`) of ``subject``'s learner."""
    from ...diagnostics import relevance as R
    from ...models.multihead import MultiHeadLearner
    from .report import RelevanceReport

    sp = subject.spec
    model = subject.model
    if not isinstance(model, MultiHeadLearner):
        raise InputError(f"relevance needs the multihead architecture, got {sp.model.arch!r}", source=sp.origin)
    meta = _metadata_names(subject)
    fnames = feature_names or sp.relevance.feature_names or meta.get("feature_names")
    hnames = head_names or sp.relevance.head_names or meta.get("head_names")
    flat = {**subject.state_dict, **(subject.extras.get("learner") or {})}
    opt = subject.extras.get(sp.relevance.optimizer)
    if opt is not None and not isinstance(opt, dict):
        raise InputError(f"checkpoint entry {sp.relevance.optimizer!r} is not an optimizer state_dict",
                         source=subject.path)
    state = R.learner_state_from_state_dict(flat, optimizer_state=opt, step_size_kind=step_size_kind)
    for key, given, n, stem in (("feature_names", fnames, state.n_features, "features"),
                                ("head_names", hnames, state.n_heads, "heads")):
        if given is not None and given is meta.get(key) and len(given) != n:
            raise InputError(f"the checkpoint's metadata.{key} has {len(given)} names for {n} {stem}; pass "
                             f"--{key.replace('_', '-')}", source=subject.path)
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore"):  # non-finite weights are flagged below, not warned about
        body = R.relevance_report(state, fnames, hnames)
    fn = list(fnames) if fnames else [f"feature_{i}" for i in range(state.n_features)]
    hn = list(hnames) if hnames else [f"head_{i}" for i in range(state.n_heads)]
    sens = None
    if sensitivity or observation is not None:
        sens = _sensitivity(subject, state.n_features, fn, hn, sensitivity, observation)
    checks = _truth_checks(body, sens, sp.relevance.truth, fn)
    return RelevanceReport(
        fadiag_version=__version__, method_name=sp.audit.method_name or subject.path, feature_names=fn,
        head_names=hn, step_size_kind=state.step_size_kind, trunk=body["trunk"], per_head=body["per_head"],
        sensitivity=sens, truth_checks=checks or None, flags=_flags(body, flat, checks),
        checkpoint=subject.checkpoint.describe(), data=dict(subject.data_info) or None, spec=sp.origin)


def _metadata_names(subject) -> dict:
    """The feature/head names an alberta-framework folder's metadata carries (fadiag.checkpoint.alberta), else {}."""
    from ...checkpoint.alberta import METADATA_NAMES

    if getattr(subject.checkpoint, "format", "") != "alberta-orbax":
        return {}
    return subject.extras.get(METADATA_NAMES) or {}


def _sensitivity(subject, n_features: int, fn: list, hn: list, sensitivity: bool, observation: str | None) -> dict:
    """The sensitivity tier: mean |Jacobian| over the eval rows and/or the Jacobian at ``--observation``."""
    import torch

    from ...diagnostics import relevance as R

    model, origin = subject.model, subject.spec.origin
    # --observation v1,..,vF alone is the Jacobian at that point: no eval data, no mean over rows.
    point_only = observation is not None and "," in observation and not sensitivity
    X = torch.cat([x for x, _ in subject.batches]).to(subject.device) if subject.batches else None
    if X is None and point_only:
        X = torch.zeros(0, n_features, dtype=next(model.parameters()).dtype, device=subject.device)
    if X is None:
        raise InputError("sensitivity needs eval data (data.path in the spec, or --data)", source=origin)
    if X.shape[1] != n_features:
        raise InputError(f"data has {X.shape[1]} features, the learner {n_features}", source="data")
    if point_only:
        sens = {"over": "the --observation point only", "mean_abs": None}
    else:
        sens = {"over": f"{X.shape[0]} eval rows", "mean_abs": {}}
        mas = R.mean_abs_sensitivity(model, X).cpu()
        for h, name in enumerate(hn):
            sens["mean_abs"][name] = dict(zip(fn, mas[h].tolist()))
    if observation is not None:
        xo = _observation(observation, X, n_features)
        J = R.sensitivity(model, xo).cpu().double()
        sens["observation"] = {"x": xo.tolist(), "jacobian": {name: dict(zip(fn, J[h].tolist()))
                                                              for h, name in enumerate(hn)}}
    return sens


def _truth_checks(body: dict, sens: dict | None, truth: dict | None, fn: list) -> dict:
    """With ``relevance.truth``: does each head's known features rank first, by weight relevance and (with
    sensitivity) by mean |Jacobian| x normalizer_std."""
    checks = {}
    if truth:
        checks["weight_relevance"] = _rank_check({h: v["weight_relevance"] for h, v in body["per_head"].items()},
                                                 truth, fn)
        if sens and sens["mean_abs"]:
            std = body["trunk"].get("normalizer_std")
            scaled = {h: {f: v * (std[f] if std else 1.0) for f, v in row.items()} for h, row in sens["mean_abs"].items()}
            checks["mean_abs_sensitivity_x_std"] = _rank_check(scaled, truth, fn)
    return checks


def _flags(body: dict, flat: dict, checks: dict) -> tuple:
    from ...diagnostics import relevance as R

    bad = R.non_finite_fields(body)
    flags = [Flag("nonfinite", "non-finite relevance values", bool(bad), float(len(bad)), 0.0,
                  ("at " + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")) if bad else "all finite")]
    # Biases and buffers enter no relevance field, yet a NaN there makes every prediction NaN.
    bad_state = sorted(k for k, v in flat.items() if count_nonfinite(v))
    flags.append(Flag("nonfinite_state", "non-finite learner state", bool(bad_state), float(len(bad_state)), 0.0,
                      ("in " + ", ".join(bad_state[:5])) if bad_state else "every tensor finite"))
    for name, res in checks.items():
        miss = [h for h, r in res.items() if not r["ranked_first"]]
        flags.append(Flag(f"truth_{name}", f"known features not ranked first by {name}", bool(miss),
                          float(len(miss)), 0.0, f"heads {miss}" if miss else "every head's known features rank first"))
    return tuple(flags)


def _observation(obs: str, X, n_features: int):
    import torch

    s = obs.strip()
    if "," in s:
        try:
            vals = [float(v) for v in s.split(",")]
        except ValueError:
            raise InputError(f"expected a row index or {n_features} comma-separated numbers", source="--observation") from None
        if len(vals) != n_features:
            raise InputError(f"expected {n_features} values, got {len(vals)}", source="--observation")
        if not all(math.isfinite(v) for v in vals):
            raise InputError("every value must be finite (no nan/inf)", source="--observation")
        return torch.tensor(vals, dtype=X.dtype)
    try:
        i = int(s)
    except ValueError:
        raise InputError(f"expected a row index or {n_features} comma-separated numbers", source="--observation") from None
    if not 0 <= i < X.shape[0]:
        raise InputError(f"row {i} out of range 0..{X.shape[0] - 1}", source="--observation")
    return X[i]
