"""``fadiag credit``: per-layer credit-assignment metrics of a checkpoint (docs/science.md §2).

One forward + backward on the first eval batch gives h_l and the BP gradients; the credit signal a_l
comes from the learning rule (bp | dfa | fa | tensors | random); then, per layer l = 0..L:
Γ_l (offline BP cosine with ‖a_l‖ and ‖g_l‖ beside it), ρ_l (perturbation correlation, one batched pass
through the rest of the network), Δ_l (nudging, one or more η), M_l (feature drift against an init
checkpoint). Missing auxiliary inputs give N/A with the reason, never a fallback value (pitfall 6.5).

Report schema "fadiag.credit/1".
"""

from __future__ import annotations

import dataclasses
import math

from . import __version__
from .errors import InputError, MissingInputError
from .report import Flag, clean

CREDIT_SCHEMA = "fadiag.credit/1"
DEFAULT_CREDIT_THRESHOLDS = {
    # fadiag's own choice (docs/science.md gives the calibration, not a cut-off): BP reaches ≈ 0.9965 and a
    # random signal ≈ 0.006, so a deep-layer mean below 0.5 means the signal does not predict the loss.
    "rho_deep_floor": 0.5,
    # (b)'s floor: below it the BP gradient is numerical noise and Γ is uninterpretable.
    "g_norm_floor": 1e-7,
}
SIGNALS = ("bp", "dfa", "fa", "value", "tensors", "random")


def _thresholds(base: dict, overrides: dict | None, source: str) -> dict:
    out = dict(DEFAULT_CREDIT_THRESHOLDS)
    for layer in (base or {}), (overrides or {}):
        for k, v in layer.items():
            if k not in DEFAULT_CREDIT_THRESHOLDS:
                raise InputError(f"unknown credit threshold {k!r} (valid: {', '.join(DEFAULT_CREDIT_THRESHOLDS)})",
                                 source=source)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise InputError(f"{k} must be a finite number, got {v!r}", source=source)
            if k == "g_norm_floor" and v <= 0:
                raise InputError(f"g_norm_floor must be positive, got {v!r}", source=source)
            if k == "rho_deep_floor" and not -1.0 <= v <= 1.0:
                raise InputError(f"rho_deep_floor is a correlation floor in [-1, 1], got {v!r}", source=source)
            out[k] = float(v)
    return out


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


def _feedback_list(extras: dict, key: str, source: str):
    import torch

    fb = extras.get(key)
    if fb is None:
        return None
    if isinstance(fb, torch.Tensor):
        return [fb[i] for i in range(fb.shape[0])] if fb.dim() == 3 else None
    if isinstance(fb, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in fb):
        return list(fb)
    if isinstance(fb, dict):
        return fb
    raise InputError(f"checkpoint entry {key!r} is not a tensor, list of tensors or dict", source=source)


def _value_net(subject, key: str | None):
    """Build the value net stored under ``key`` (None when the key is unset or absent: N/A, never a fallback)."""
    from .checkpoint import find_state_dict
    from .models import build_model
    from .subject import check_state_dict

    cs = subject.spec.credit
    if not key or key not in subject.extras:
        return None
    sd, _ = find_state_dict(subject.extras[key], "auto", "", source=f"{subject.path}:{key}")
    net = build_model(cs.value_arch, cs.value_args, origin=subject.spec.origin, base_dir=subject.spec.base_dir)
    check_state_dict(net, sd, source=f"{subject.path}:{key}", spec_origin=subject.spec.origin)
    net.load_state_dict(sd)
    return net.double().to(subject.device).eval()


def _read_tensors_file(path: str, n: int):
    """Precomputed a_l: a tensor (L+1, B, ...) under 'a' or 'signals', or keys a_0..a_L."""
    from .checkpoint import read_checkpoint

    raw = read_checkpoint(path)
    c = raw.content
    import torch

    if isinstance(c, torch.Tensor):
        return [c[i] for i in range(c.shape[0])]
    if isinstance(c, dict):
        for k in ("a", "signals"):
            if isinstance(c.get(k), torch.Tensor):
                return [c[k][i] for i in range(c[k].shape[0])]
        if all(f"a_{i}" in c for i in range(n)):
            return [c[f"a_{i}"] for i in range(n)]
    raise InputError(f"expected a tensor 'a' (L+1, B, d) or keys a_0..a_{n - 1}", source=path)


def credit(subject, *, signal: str | None = None, init_path: str | None = None, tensors_path: str | None = None,
           eps: float | None = None, n_dirs: int | None = None, etas: list | None = None, seed: int | None = None,
           thresholds: dict | None = None, progress=None) -> dict:
    """Per-layer credit metrics on the first eval batch; returns the "fadiag.credit/1" report dict."""
    import torch

    from .diagnostics import credit as C

    sp = subject.spec
    cs = sp.credit
    signal = signal or cs.signal
    if signal not in SIGNALS:
        raise InputError(f"unknown signal {signal!r} (choose from {', '.join(SIGNALS)})", source="--signal")
    eps = cs.eps if eps is None else eps
    n_dirs = cs.n_dirs if n_dirs is None else n_dirs
    etas = list(cs.etas if etas is None else etas)
    seed = cs.seed if seed is None else seed
    if not (math.isfinite(eps) and eps > 0):
        raise InputError(f"must be a positive finite number, got {eps}", source="--eps")
    if not 1 <= n_dirs <= 4096:
        raise InputError(f"must be in 1..4096, got {n_dirs}", source="--n-dirs")
    if not etas or not all(isinstance(e, (int, float)) and math.isfinite(e) and e > 0 for e in etas):
        raise InputError(f"etas must be positive finite numbers, got {etas}", source="--eta")
    th = _thresholds(cs.thresholds, thresholds, f"{sp.origin}: credit.thresholds / --threshold")
    x, y = subject.batches[0]
    x, y = x.to(subject.device), y.to(subject.device)
    # Pitfall 3, and more: every credit quantity is computed on a float64 copy of the model. On an
    # exploded stream (||h|| ~ 1e6) an eps-sized perturbation is below float32 resolution and rounds away,
    # which would make even the exact BP gradient score rho ~ 0.
    from .stream import settled_pass

    view = subject.view.double()
    x = x.double() if x.dtype.is_floating_point else x
    # BP signal: per-sample loss SUMMED (samples not scaled by 1/B); g for the floor: d(mean loss)/dh.
    view, (logits, hs, grads_sum, _, _) = settled_pass(view, x, y, reduction="sum")
    B = x.shape[0]
    hs_flat = [view.pool(h) for h in hs]  # the pooled token for token models, (B, d) otherwise
    g_sum = [view.pool_grad(g) for g in grads_sum]
    g_mean = [g / B for g in g_sum]
    n = len(hs)
    na: dict = {}
    signals = None
    src = ""
    if signal == "bp":
        signals, src = g_sum, "BP gradient of the summed per-sample CE"
    elif signal == "random":
        gen = torch.Generator().manual_seed(seed + 7919)
        signals = [torch.randn(g.shape, generator=gen, dtype=torch.float64) for g in g_sum]
        src = f"Gaussian control, seed {seed + 7919}"
    elif signal in ("dfa", "fa"):
        fb = _feedback_list(subject.extras, cs.feedback, subject.path)
        if fb is None:  # a missing input is bad input (exit 2), never a redraw and never a report of N/As
            raise MissingInputError(f"--signal {signal}: no training-time feedback matrices under {cs.feedback!r} "
                                    "in the checkpoint (credit.feedback names the key); fadiag never redraws them, "
                                    "a fresh B_l gives a meaningless Γ (docs/science.md §2, pitfall 4)",
                                    source=subject.path)
        elif signal == "dfa":
            if isinstance(fb, dict):
                raise InputError(f"{cs.feedback!r} holds a dict; DFA needs a tensor (L+1, C, d) or a list",
                                 source=subject.path)
            if len(fb) != n:
                raise InputError(f"{len(fb)} feedback matrices for {n} hidden states h_0..h_{n - 1}",
                                 source=subject.path)
            try:
                signals = C.dfa_signals(logits.detach(), y, fb)
            except ValueError as e:
                raise InputError(str(e), source=subject.path) from None
            src = f"DFA: e = softmax - onehot times the training-time B_l under {cs.feedback!r}"
        else:
            if not (isinstance(fb, dict) and "top" in fb and "layers" in fb):
                raise InputError(f"FA needs {cs.feedback!r} = {{'top': (C, d), 'layers': [B_0..B_{{L-1}}]}}",
                                 source=subject.path)
            if len(fb["layers"]) != n - 1:
                raise InputError(f"FA needs {n - 1} layer matrices B_0..B_{n - 2}, got {len(fb['layers'])}",
                                 source=subject.path)
            e = C.output_error(logits.detach(), y)
            top = e @ fb["top"].to(torch.float64)
            try:
                signals = C.fa_signals(top, list(fb["layers"]))
            except ValueError as err_:
                raise InputError(str(err_), source=subject.path) from None
            src = f"FA: a_L = e B_top, a_l = B_l a_(l+1), matrices under {cs.feedback!r}"
    elif signal == "value":
        vnet = _value_net(subject, cs.value)
        if vnet is None:
            raise MissingInputError(f"--signal value: no value net under credit.value = {cs.value!r} in the "
                                    "checkpoint; fadiag never substitutes one (docs/science.md §2, pitfall 6.5)",
                                    source=subject.path)
        else:
            signals = []
            for l, h in enumerate(hs_flat):
                hv = h.clone().requires_grad_(True)
                with torch.enable_grad():
                    (dv,) = torch.autograd.grad(vnet(hv, l).sum(), hv)
                signals.append(dv.detach())
            src = f"value net: a_l = dV(h_l, l)/dh_l, V under {cs.value!r}"
    elif signal == "tensors":
        path = tensors_path or sp.resolve(cs.tensors)
        if not path:
            raise InputError("signal 'tensors' needs --tensors FILE (or credit.tensors in the spec)", source="--signal")
        else:
            raw_signals = _read_tensors_file(path, n)
            if any(t.dim() < 2 or t.shape[0] != B for t in raw_signals):
                raise InputError(f"each a_l must be ({B}, ...) like h_l, got {[tuple(t.shape) for t in raw_signals][:2]}",
                                 source=path)
            signals = [view.pool(t.to(torch.float64)) for t in raw_signals]
            if len(signals) != n or any(s.shape != g.shape for s, g in zip(signals, g_sum)):
                raise InputError(f"signals must be {n} tensors shaped like h_l "
                                 f"{[tuple(g.shape) for g in g_sum][:2]}...", source=path)
            src = f"precomputed tensors from {path}"

    # Feature drift against the init checkpoint.
    drift_tensors, drift_layers = None, None
    ipath = init_path or sp.resolve(cs.init_checkpoint)
    if ipath:
        from .checkpoint import find_state_dict, read_checkpoint

        raw = read_checkpoint(ipath)
        # The init file is its own file: a flat dict of tensors, or under "model"/"state_dict"/..., whatever
        # key the main checkpoint uses (its checkpoint.state_dict key is used only when the init has it).
        key = sp.checkpoint.state_dict
        key = key if isinstance(raw.content, dict) and key in raw.content else "auto"
        init_sd, _ = find_state_dict(raw.content, key, sp.checkpoint.strip_prefix, source=ipath,
                                     model_keys=subject.state_dict.keys())
        try:
            fd = C.feature_drift(subject.state_dict, init_sd)
        except ValueError as e:
            raise InputError(str(e), source=ipath) from None
        if fd.only_in_final or fd.only_in_init:
            raise InputError(f"init checkpoint does not match: {len(fd.only_in_final)} key(s) only in the "
                             f"checkpoint, {len(fd.only_in_init)} only in the init", source=ipath)
        drift_tensors = fd.drift
        drift_layers = C.drift_per_layer(fd, layer_of(view))
    else:
        na["drift"] = "no init checkpoint (--init or credit.init_checkpoint)"

    # Bridge residual R_l: needs the value net and its EMA target (docs/science.md §2).
    vnet = _value_net(subject, cs.value) if cs.value else None
    vtgt = _value_net(subject, cs.value_target) if cs.value_target else None
    if vnet is None or vtgt is None:
        na["bridge_residual"] = ("needs a value net and its EMA target in the checkpoint "
                                 "(credit.value, credit.value_target)")
    bridge_gen = torch.Generator().manual_seed(seed + 104729)

    layers = []
    gen = torch.Generator().manual_seed(seed)
    for l in range(n):
        row = {"layer": l}
        fn = view.rest_fn(l, x, y, hs[l])
        if signals and tuple(signals[l].shape) != tuple(hs_flat[l].shape):
            raise InputError(f"signal a_{l} has shape {tuple(signals[l].shape)}, h_{l} (per sample) "
                             f"{tuple(hs_flat[l].shape)}", source=src or signal)
        bp_cos = C.offline_bp_cosine(signals[l], g_mean[l], floor=th["g_norm_floor"]) if signals else None
        row["gamma"] = bp_cos["gamma"] if bp_cos else None
        row["a_norm"] = bp_cos["a_norm"] if bp_cos else None
        # Two scales of the same gradient, named apart: per sample (the scale of a_l; the BP signal has
        # exactly this norm) and of the mean CE (what the (b) floor is calibrated on).
        row["g_norm_per_sample"] = C._median(C.row_norms(g_sum[l]))
        row["g_norm_mean_ce"] = C._median(C.row_norms(g_mean[l]))
        row["gamma_interpretable"] = bp_cos["interpretable"] if bp_cos else None
        if signals:
            a = signals[l].to(torch.float64)
            with torch.no_grad():
                row["rho"] = C.perturbation_correlation(hs_flat[l], a, fn, eps=eps, n_dirs=n_dirs, generator=gen)
                nd = C.nudging_delta(hs_flat[l], a, fn, eta=etas if len(etas) > 1 else etas[0])
            row["nudging"] = {str(k): v for k, v in (nd.items() if isinstance(nd, dict) else [(etas[0], nd)])}
        else:
            row["rho"], row["nudging"] = None, None
        row["drift"] = drift_layers.get(l) if drift_layers is not None else None
        if vnet is not None and vtgt is not None and l + 1 < n:
            row["bridge_residual"] = C.bridge_residual(
                hs_flat[l], hs_flat[l + 1], lambda h, _l=l: vnet(h, _l), lambda h, _l=l: vtgt(h, _l + 1),
                K=cs.bridge_k, lam=cs.bridge_lambda, sigma=cs.bridge_sigma, generator=bridge_gen)
        else:
            row["bridge_residual"] = None
        layers.append(row)
        if progress:
            progress(l + 1, n)

    gammas = [r["gamma"] if r["gamma_interpretable"] else None for r in layers]
    means = {
        "gamma": C.layer_means([r["gamma"] for r in layers]),
        "gamma_interpretable_only": C.layer_means(gammas),
        "rho": C.layer_means([r["rho"] for r in layers]),
    }
    if "bridge_residual" not in na:
        means["bridge_residual"] = C.layer_means([r["bridge_residual"] for r in layers])
    for eta in etas:
        means[f"nudging@{eta}"] = C.layer_means([(r["nudging"] or {}).get(str(eta)) for r in layers])

    flags = []
    if "signal" in na:
        flags.append(Flag("signal", "credit signal unavailable", True, None, None, na["signal"]))
    rho_deep = means["rho"]["deep_only"]
    if signals:
        ok = isinstance(rho_deep, float) and math.isfinite(rho_deep)
        flags.append(Flag("rho", "credit signal does not predict loss changes (deep-layer ρ)",
                          True if not ok else rho_deep < th["rho_deep_floor"], rho_deep if ok else None,
                          th["rho_deep_floor"], f"mean ρ over layers ≥ 1 = {rho_deep:.4g}" if ok else "non-finite ρ"))
        unint = [r["layer"] for r in layers if not r["gamma_interpretable"]]
        flags.append(Flag("gamma", "Γ uninterpretable (BP gradient below the floor or non-finite)", bool(unint),
                          float(len(unint)), 0.0,
                          f"layers {unint}: ‖g_l‖ < {th['g_norm_floor']:g} or non-finite" if unint else
                          "‖g_l‖ above the floor at every layer"))
    from .diagnostics.protocol import block_update_norms, dead_blocks, norms_per_layer

    res_norms = norms_per_layer(hs_flat)
    if res_norms[0] == 0.0:
        flags.append(Flag("zero_stream", "residual stream is zero at layer 0 (the network ignores its input)", True,
                          0.0, 0.0, "median ||h_0|| = 0: every credit metric is about a constant input"))
    upd = [u if hs[l].shape == hs[l + 1].shape else None for l, u in enumerate(block_update_norms(hs_flat))]
    all_dead, n_dead = dead_blocks(res_norms, upd)
    n_def = sum(u is not None for u in upd)
    if n_def < n - 1:
        na["dead_blocks"] = f"{n - 1 - n_def} block(s) change the stream's shape (no identity path to compare)"
    flags.append(Flag("dead_blocks", "residual blocks contribute nothing", all_dead if n_def else None,
                      float(n_dead), float(n_def), f"{n_dead} of {n_def} block(s) add (almost) nothing to the stream"))
    nonfinite = sum(int((~torch.isfinite(t)).sum()) for t in hs_flat + g_sum) + int((~torch.isfinite(logits)).sum())
    flags.append(Flag("nonfinite", "non-finite values in the forward/backward pass", nonfinite > 0,
                      float(nonfinite), 0.0, f"{nonfinite} NaN/Inf value(s)"))
    names = [f.name for f in flags if f.flagged]
    return clean({
        "schema": CREDIT_SCHEMA, "fadiag_version": __version__,
        "method_name": sp.audit.method_name or subject.path, "signal": signal, "signal_source": src or None,
        "layers": layers, "means": means, "drift_per_tensor": drift_tensors,
        "not_available": na,
        "params": {"eps": eps, "n_dirs": n_dirs, "etas": etas, "seed": seed, "batch_size": B,
                   "bridge_k": cs.bridge_k, "bridge_lambda": cs.bridge_lambda, "bridge_sigma": cs.bridge_sigma,
                   "batch": "first eval batch", "weight_dtypes": subject.weight_dtypes},
        "thresholds": th, "flags": [dataclasses.asdict(f) for f in flags],
        "verdict": "ok" if not names else "needs walk-back: " + "; ".join(names),
        "checkpoint": subject.checkpoint.describe(), "data": dict(subject.data_info), "spec": sp.origin,
        "stream": view.stream.describe(),
    })


def toy_lq(*, d: int = 16, depth: int = 6, batch: int = 64, seed: int = 0) -> dict:
    """``fadiag credit --toy-lq``: exact costate cosine for BP and DFA signals on the toy LQ system."""
    from .diagnostics import credit as C

    for name, v, lo, hi in (("--toy-d", d, 1, 4096), ("--toy-depth", depth, 1, 256), ("--batch-size", batch, 1, 65536)):
        if not lo <= v <= hi:
            raise InputError(f"must be in {lo}..{hi}, got {v}", source=name)
    res = C.run_toy_lq(d=d, L=depth, B=batch, seed=seed)
    layers = [{"layer": l, "costate_cos_bp": res["bp"][l], "costate_cos_dfa": res["dfa"][l]} for l in range(depth + 1)]
    mb, md = C.layer_means(res["bp"]), C.layer_means(res["dfa"])
    ok_bp = math.isfinite(mb["all_layers"]) and mb["all_layers"] > 0.99
    flags = [Flag("toy_bp", "BP does not match the exact costate", not ok_bp, mb["all_layers"], 0.99,
                  "BP must give cos ≈ 1 at every layer; anything else is a bug")]
    return clean({
        "schema": CREDIT_SCHEMA, "fadiag_version": __version__, "method_name": "toy linear-quadratic system",
        "signal": "bp+dfa", "signal_source": "exact costates lambda_L = Q(h_L - t), lambda_l = (I + W_l)^T lambda_(l+1)",
        "layers": layers, "means": {"costate_cos_bp": mb, "costate_cos_dfa": md}, "drift_per_tensor": None,
        "not_available": {}, "params": {"d": d, "depth": depth, "batch_size": batch, "seed": seed},
        "thresholds": {}, "flags": [dataclasses.asdict(f) for f in flags],
        "verdict": "ok" if ok_bp else "needs walk-back: BP does not match the exact costate",
        "checkpoint": None, "data": {"source": "toy", "seed": seed}, "spec": None,
    })
