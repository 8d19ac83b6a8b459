"""``fadiag credit``: per-layer credit-assignment metrics of a checkpoint (docs/science.md §2).

ONE forward + backward of the float64 copy of the model on the first eval batch (fadiag.stream) gives h_l
and the BP gradients; the credit signal a_l comes from the learning rule's provider (fadiag.families.credit.signals:
bp | dfa | fa | value | tensors | random); then, per layer l = 0..L: Γ_l (offline BP cosine with ‖a_l‖ and
‖g_l‖ beside it), ρ_l (perturbation correlation, one batched pass through the rest of the network, the
view's ``rest_fn``), Δ_l (nudging, one or more η), M_l (feature drift against an init checkpoint) and the
bridge residual R_l. Missing auxiliary inputs give N/A with the reason, never a fallback value (pitfall 6.5).

Returns a :class:`fadiag.families.credit.report.CreditReport` (schema "fadiag.credit/2", docs/json.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ... import __version__
from ...compat.biotorch import report_extra
from .signals import PROVIDERS, CreditPass, value_net
from ...diagnostics.common import G_NORM_FLOOR
from ...errors import InputError
from ...reports.base import Flag, Threshold, merge_thresholds
from .report import CreditReport

CREDIT_SCHEMA = CreditReport.SCHEMA
THRESHOLDS = (
    # fadiag's own choice (docs/science.md gives the calibration, not a cut-off): BP reaches ≈ 0.9965 and a
    # random signal ≈ 0.006, so a deep-layer mean below 0.5 means the signal does not predict the loss.
    Threshold("rho_deep_floor", 0.5, low=-1.0, high=1.0, rule="is a correlation floor in [-1, 1]",
              help="flag when the deep-layer mean ρ is below this"),
    # (b)'s floor: below it the BP gradient is numerical noise and Γ is uninterpretable.
    Threshold("g_norm_floor", G_NORM_FLOOR, positive=True, help="Γ_l is uninterpretable when ‖g_l‖ is below this"),
)
DEFAULT_CREDIT_THRESHOLDS = {t.name: t.default for t in THRESHOLDS}
SIGNALS = tuple(PROVIDERS)


@dataclass(frozen=True)
class CreditOptions:
    """The validated options of one credit run (spec credit: section, overridden by the CLI)."""

    signal: str
    eps: float
    n_dirs: int
    etas: list
    seed: int
    thresholds: dict


def credit_options(sp, signal=None, eps=None, n_dirs=None, etas=None, seed=None, thresholds=None) -> CreditOptions:
    """The spec's credit section with the given overrides, every value checked (bad input: exit 2)."""
    cs = sp.credit
    signal = signal or cs.signal
    if signal not in PROVIDERS:
        raise InputError(f"unknown signal {signal!r} (choose from {', '.join(SIGNALS)})", source="--signal")
    eps = cs.eps if eps is None else eps
    n_dirs = cs.n_dirs if n_dirs is None else n_dirs
    etas = list(cs.etas if etas is None else etas)
    if not (math.isfinite(eps) and eps > 0):
        raise InputError(f"must be a positive finite number, got {eps}", source="--eps")
    if not 1 <= n_dirs <= 4096:
        raise InputError(f"must be in 1..4096, got {n_dirs}", source="--n-dirs")
    if not etas or not all(isinstance(e, (int, float)) and math.isfinite(e) and e > 0 for e in etas):
        raise InputError(f"etas must be positive finite numbers, got {etas}", source="--eta")
    th = merge_thresholds(THRESHOLDS, cs.thresholds, thresholds, source=f"{sp.origin}: credit.thresholds / --threshold",
                          kind="credit threshold")
    return CreditOptions(signal, eps, n_dirs, etas, cs.seed if seed is None else seed, th)


def layer_of(view):
    """Parameter name -> layer index by the stream's paths: the embedding 0 (it produces h_0), block i -> i + 1
    (it produces h_{i+1}); anything else (readout, norms) None."""
    blocks = [(p + ".", i + 1) for i, p in enumerate(view.stream.blocks)]
    embed = (view.stream.embed + ".") if view.stream.embed else None

    def of(name: str):
        for pre, l in blocks:
            if name.startswith(pre):
                return l
        return 0 if embed and name.startswith(embed) else None

    return of


def credit_pass(subject) -> CreditPass:
    """The one pass: the first eval batch through the float64 copy of the view, loss summed over samples.

    Pitfall 3, and more: every credit quantity is computed on a float64 copy of the model. On an exploded
    stream (||h|| ~ 1e6) an eps-sized perturbation is below float32 resolution and rounds away, which would
    make even the exact BP gradient score rho ~ 0. The BP signal is the per-sample loss SUMMED (samples not
    scaled by 1/B); g for the floor is d(mean loss)/dh = g_sum / B."""
    from ...stream import settled_pass

    x, y = subject.batches[0]
    x, y = x.to(subject.device), y.to(subject.device)
    x = x.double() if x.dtype.is_floating_point else x
    view, (logits, hs, grads_sum, _, _) = settled_pass(subject.view.double(), x, y, reduction="sum")
    return CreditPass(subject=subject, view=view, x=x, y=y, logits=logits, hs=hs,
                      hs_flat=[view.pool(h) for h in hs],  # the pooled token for token models, (B, d) otherwise
                      g_sum=[view.pool_grad(g) for g in grads_sum])


def _drift(subject, view, init_path, na: dict):
    """(drift per tensor, per layer) against the init checkpoint, or (None, None) with the N/A reason."""
    from ...checkpoint import find_state_dict, read_checkpoint
    from ...diagnostics.drift import drift_per_layer, feature_drift

    sp = subject.spec
    ipath = init_path or sp.resolve(sp.credit.init_checkpoint)
    if not ipath:
        na["drift"] = "no init checkpoint (--init or credit.init_checkpoint)"
        return None, None
    raw = read_checkpoint(ipath)
    # The init file is its own file: a flat dict of tensors, or under "model"/"state_dict"/..., whatever
    # key the main checkpoint uses (its checkpoint.state_dict key is used only when the init has it).
    key = sp.checkpoint.state_dict
    key = key if isinstance(raw.content, dict) and key in raw.content else "auto"
    init_sd, _ = find_state_dict(raw.content, key, sp.checkpoint.strip_prefix, source=ipath,
                                 model_keys=subject.state_dict.keys())
    try:
        fd = feature_drift(subject.state_dict, init_sd)
    except ValueError as e:
        raise InputError(str(e), source=ipath) from None
    if fd.only_in_final or fd.only_in_init:
        raise InputError(f"init checkpoint does not match: {len(fd.only_in_final)} key(s) only in the "
                         f"checkpoint, {len(fd.only_in_init)} only in the init", source=ipath)
    return fd.drift, drift_per_layer(fd, layer_of(view))


def _bridge_nets(subject, na: dict):
    """(V, V_target) for the bridge residual R_l (docs/science.md §2), or None with the N/A reason."""
    cs = subject.spec.credit
    vnet = value_net(subject, cs.value) if cs.value else None
    vtgt = value_net(subject, cs.value_target) if cs.value_target else None
    if vnet is None or vtgt is None:
        na["bridge_residual"] = ("needs a value net and its EMA target in the checkpoint "
                                 "(credit.value, credit.value_target)")
        return None
    return vnet, vtgt


def _layer_row(l: int, p: CreditPass, a, o: CreditOptions, gen, bridge, bridge_gen) -> dict:
    """Γ_l, the two ‖g_l‖ scales, ρ_l and Δ_l of one layer (drift is added by the caller)."""
    import torch

    from ...diagnostics import credit as C

    g_sum = p.g_sum[l]
    g_mean = g_sum / p.x.shape[0]
    bp_cos = C.offline_bp_cosine(a, g_mean, floor=o.thresholds["g_norm_floor"])
    # Two scales of the same gradient, named apart: per sample (the scale of a_l; the BP signal has exactly
    # this norm) and of the mean CE (what the (b) floor is calibrated on).
    row = {"layer": l, "gamma": bp_cos["gamma"], "a_norm": bp_cos["a_norm"],
           "g_norm_per_sample": C._median(C.row_norms(g_sum)), "g_norm_mean_ce": C._median(C.row_norms(g_mean)),
           "gamma_interpretable": bp_cos["interpretable"]}
    fn = p.view.rest_fn(l, p.x, p.y, p.hs[l])
    h, a = p.hs_flat[l], a.to(torch.float64)
    with torch.no_grad():
        row["rho"] = C.perturbation_correlation(h, a, fn, eps=o.eps, n_dirs=o.n_dirs, generator=gen)
        nd = C.nudging_delta(h, a, fn, eta=o.etas if len(o.etas) > 1 else o.etas[0])
    row["nudging"] = {str(k): v for k, v in (nd.items() if isinstance(nd, dict) else [(o.etas[0], nd)])}
    row["drift"] = None
    row["bridge_residual"] = None
    if bridge is not None and l + 1 < p.n:
        cs, (vnet, vtgt) = p.subject.spec.credit, bridge
        row["bridge_residual"] = C.bridge_residual(
            h, p.hs_flat[l + 1], lambda hh: vnet(hh, l), lambda hh: vtgt(hh, l + 1),
            K=cs.bridge_k, lam=cs.bridge_lambda, sigma=cs.bridge_sigma, generator=bridge_gen)
    return row


def _layers(p: CreditPass, signals, src: str, o: CreditOptions, drift_layers, bridge, progress) -> list:
    import torch

    for l in range(p.n):
        if tuple(signals[l].shape) != tuple(p.hs_flat[l].shape):
            raise InputError(f"signal a_{l} has shape {tuple(signals[l].shape)}, h_{l} (per sample) "
                             f"{tuple(p.hs_flat[l].shape)}", source=src or o.signal)
    gen = torch.Generator().manual_seed(o.seed)
    bridge_gen = torch.Generator().manual_seed(o.seed + 104729)
    rows = []
    for l in range(p.n):
        row = _layer_row(l, p, signals[l], o, gen, bridge, bridge_gen)
        row["drift"] = drift_layers.get(l) if drift_layers is not None else None
        rows.append(row)
        if progress:
            progress(l + 1, p.n)
    return rows


def _means(layers: list, etas: list, na: dict) -> dict:
    from ...diagnostics.credit import layer_means

    means = {"gamma": layer_means([r["gamma"] for r in layers]),
             "gamma_interpretable_only": layer_means([r["gamma"] if r["gamma_interpretable"] else None
                                                      for r in layers]),
             "rho": layer_means([r["rho"] for r in layers])}
    if "bridge_residual" not in na:
        means["bridge_residual"] = layer_means([r["bridge_residual"] for r in layers])
    for eta in etas:
        means[f"nudging@{eta}"] = layer_means([(r["nudging"] or {}).get(str(eta)) for r in layers])
    return means


def _signal_flags(layers: list, means: dict, th: dict) -> list:
    rho_deep = means["rho"]["deep_only"]
    ok = isinstance(rho_deep, float) and math.isfinite(rho_deep)
    unint = [r["layer"] for r in layers if not r["gamma_interpretable"]]
    return [Flag("rho", "credit signal does not predict loss changes (deep-layer ρ)",
                 True if not ok else rho_deep < th["rho_deep_floor"], rho_deep if ok else None, th["rho_deep_floor"],
                 f"mean ρ over layers ≥ 1 = {rho_deep:.4g}" if ok else "non-finite ρ"),
            Flag("gamma", "Γ uninterpretable (BP gradient below the floor or non-finite)", bool(unint),
                 float(len(unint)), 0.0, f"layers {unint}: ‖g_l‖ < {th['g_norm_floor']:g} or non-finite" if unint
                 else "‖g_l‖ above the floor at every layer")]


def _stream_flags(p: CreditPass, na: dict) -> list:
    """zero_stream, dead_blocks (audit's (f) rule) and e (non-finite values: audit's (e))."""
    from ...diagnostics.audit_quantities import NONFINITE, dead_block_reading, nonfinite_count

    flags = []
    dead = dead_block_reading(p.hs_flat, [h.shape for h in p.hs])
    res_norms, upd, all_dead, n_dead = dead["residual_norms"], dead["block_update_norms"], dead["all_dead"], \
        dead["n_dead"]
    if res_norms[0] == 0.0:
        flags.append(Flag("zero_stream", "residual stream is zero at layer 0 (the network ignores its input)", True,
                          0.0, 0.0, "median ||h_0|| = 0: every credit metric is about a constant input"))
    n_def = sum(u is not None for u in upd)
    if n_def < p.n - 1:
        na["dead_blocks"] = f"{p.n - 1 - n_def} block(s) change the stream's shape (no identity path to compare)"
    flags.append(Flag("dead_blocks", "residual blocks contribute nothing", all_dead if n_def else None,
                      float(n_dead), float(n_def), f"{n_dead} of {n_def} block(s) add (almost) nothing to the stream"))
    nonfinite = nonfinite_count(p.hs_flat, p.g_sum, p.logits)
    flags.append(Flag("e", NONFINITE.name, nonfinite > 0, float(nonfinite), 0.0, f"{nonfinite} NaN/Inf value(s)"))
    return flags


def credit(subject, *, signal: str | None = None, init_path: str | None = None, tensors_path: str | None = None,
           eps: float | None = None, n_dirs: int | None = None, etas: list | None = None, seed: int | None = None,
           thresholds: dict | None = None, progress=None) -> CreditReport:
    """Per-layer credit metrics on the first eval batch: the "fadiag.credit/2" report."""
    sp, cs = subject.spec, subject.spec.credit
    o = credit_options(sp, signal, eps, n_dirs, etas, seed, thresholds)
    p = credit_pass(subject)
    signals, src = PROVIDERS[o.signal].build(p, o.seed, tensors_path)
    na: dict = {}
    drift_tensors, drift_layers = _drift(subject, p.view, init_path, na)
    layers = _layers(p, signals, src, o, drift_layers, _bridge_nets(subject, na), progress)
    means = _means(layers, o.etas, na)
    flags = _signal_flags(layers, means, o.thresholds) + _stream_flags(p, na)
    return CreditReport(
        flags=tuple(flags), fadiag_version=__version__, method_name=sp.audit.method_name or subject.path,
        signal=o.signal, signal_source=src or None, layers=layers, means=means, drift_per_tensor=drift_tensors,
        not_available=na,
        params={"eps": o.eps, "n_dirs": o.n_dirs, "etas": o.etas, "seed": o.seed, "batch_size": p.x.shape[0],
                "bridge_k": cs.bridge_k, "bridge_lambda": cs.bridge_lambda, "bridge_sigma": cs.bridge_sigma,
                "batch": "first eval batch", "weight_dtypes": subject.weight_dtypes},
        thresholds=o.thresholds, checkpoint=subject.checkpoint.describe(), data=dict(subject.data_info),
        spec=sp.origin, stream=p.view.stream.describe(),
        extra=report_extra(subject))


def toy_lq(*, d: int = 16, depth: int = 6, batch: int = 64, seed: int = 0) -> CreditReport:
    """``fadiag credit --toy-lq``: exact costate cosine for BP and DFA signals on the toy LQ system."""
    from ...diagnostics.credit import layer_means
    from ...diagnostics.credit_toy import run_toy_lq

    for name, v, lo, hi in (("--toy-d", d, 1, 4096), ("--toy-depth", depth, 1, 256), ("--batch-size", batch, 1, 65536)):
        if not lo <= v <= hi:
            raise InputError(f"must be in {lo}..{hi}, got {v}", source=name)
    res = run_toy_lq(d=d, L=depth, B=batch, seed=seed)
    layers = [{"layer": l, "costate_cos_bp": res["bp"][l], "costate_cos_dfa": res["dfa"][l]} for l in range(depth + 1)]
    mb, md = layer_means(res["bp"]), layer_means(res["dfa"])
    ok_bp = math.isfinite(mb["all_layers"]) and mb["all_layers"] > 0.99
    flags = (Flag("toy_bp", "BP does not match the exact costate", not ok_bp, mb["all_layers"], 0.99,
                  "BP must give cos ≈ 1 at every layer; anything else is a bug"),)
    return CreditReport(
        flags=flags, fadiag_version=__version__, method_name="toy linear-quadratic system", signal="bp+dfa",
        signal_source="exact costates lambda_L = Q(h_L - t), lambda_l = (I + W_l)^T lambda_(l+1)", layers=layers,
        means={"costate_cos_bp": mb, "costate_cos_dfa": md}, drift_per_tensor=None, not_available={},
        params={"d": d, "depth": depth, "batch_size": batch, "seed": seed}, thresholds={},
        checkpoint=None, data={"source": "toy", "seed": seed}, spec=None)
