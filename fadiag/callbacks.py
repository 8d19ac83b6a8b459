"""Audits during training (docs/trajectory.md): ``Monitor`` for a plain PyTorch loop, ``LightningCallback`` for a
Lightning ``Trainer.fit`` and ``TrainerCallback`` for a Hugging Face ``Trainer.train``.

Each audits the live model on held-out batches (the audit of ``fadiag audit``: fadiag.families.audit.api.audit, one forward +
backward per batch) at the steps its schedule picks, and appends one record per audited step to a JSONL file:
the record ``fadiag trajectory`` holds per step (schema "fadiag.trajectory.point/1"), so a run's log and
``fadiag trajectory`` over the checkpoints it saved at the same steps compare record by record. Where TensorBoard
is installed and a writer (or log folder) is given, per-layer norms and flags go there as scalars too. The first
time a flag fires it is logged once (logger "fadiag"), with the step and the layer where it started.

Bounded: the default schedule (``every=None``) audits at the first call, then only while the time spent auditing
(the first audit included) stays within ``budget`` of the training time since the first call: 4% of wall time,
so that the JSONL writes and timing jitter keep the total under 5% (benchmarks/bench_callbacks.py). An audit holds nothing between calls
(no activations, graphs or model references are kept; the held-out batches are), and restores the model's
training modes, parameters' ``.grad`` and ``requires_grad``, its hooks and torch's RNG state.

``import fadiag.callbacks`` imports neither lightning nor transformers: each class is built on first use.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("fadiag")
DEFAULT_BUDGET = 0.04
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
               "_load_state_dict_pre_hooks")


class _Saved:
    """The model state an audit must give back: modes, .grad, requires_grad, hooks, the RNG."""

    def __init__(self, model):
        import torch

        self.modes = [(m, m.training) for m in model.modules()]
        self.params = [(p, p.grad, p.requires_grad) for p in model.parameters()]
        self.hooks = [(m, name, dict(getattr(m, name))) for m in model.modules() for name in _HOOK_DICTS
                      if isinstance(getattr(m, name, None), dict)]
        self.rng = torch.random.fork_rng(devices=[])
        self.rng.__enter__()

    def restore(self) -> None:
        for m, mode in self.modes:
            m.training = mode
        for p, g, rg in self.params:
            p.grad = g
            p.requires_grad_(rg)
        for m, name, before in self.hooks:
            d = getattr(m, name)
            for k in [k for k in d if k not in before]:
                del d[k]
        self.rng.__exit__(None, None, None)
        self.modes = self.params = self.hooks = None


class Monitor:
    """Audit ``model`` every ``every`` steps (``monitor.step(model, step)`` after each optimiser step).

    spec: a spec file, a spec dict or None: its audit section (thresholds, method name, baselines), stream and
        loss, and its data section when ``data`` is not given (the same rows ``fadiag trajectory --spec`` audits).
    data: held-out rows: a .npz/.pt file with x, y; an (x, y) pair of tensors; or a list of (x, y) batches.
        Split as the spec's data section says (batches x batch_size, shuffle, seed), overridable here.
    every: audit when step % every == 0; None (default): the time budget (``budget`` of training time).
    log: the JSONL file records are appended to (None: none); tensorboard: a SummaryWriter or a log folder.
    """

    def __init__(self, spec=None, *, data=None, every: int | None = None, budget: float = DEFAULT_BUDGET,
                 log: str | os.PathLike | None = "fadiag_monitor.jsonl", tensorboard=None,
                 batches: int | None = None, batch_size: int | None = None, thresholds: dict | None = None,
                 method_name: str | None = None, frozen_baseline_acc: float | None = None,
                 headline_acc: float | None = None, growth: str | None = None, stability_layer: int | None = None):
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive integer or None, got {every!r}")
        if not 0 < budget <= 1:
            raise ValueError(f"budget must be in (0, 1], got {budget!r}")
        self.spec = _spec(spec, method_name, frozen_baseline_acc)
        self.data, self.every, self.budget = data, every, budget
        self.log_path = Path(log) if log is not None else None
        self.tensorboard, self._writer = tensorboard, None
        self.split = {"batches": batches, "batch_size": batch_size}
        self.args = {"thresholds": thresholds, "headline_acc": headline_acc, "growth_mode": growth,
                     "stability_layer": stability_layer}
        self._batches = self._info = None
        self._t0, self._spent, self._last_cost = None, 0.0, 0.0
        self._since: dict = {}
        #: flag id -> {step, layer, layers, name, value, threshold} the first time it fired (as fadiag trajectory)
        self.first_flagged: dict = {}
        self.records = 0

    # ------------------------------------------------------------------------------------ schedule
    def due(self, step: int) -> bool:
        """Whether ``step`` is audited: every ``every`` steps, or (default) within the time budget."""
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        if self.every is not None:
            return step % self.every == 0
        if self.records == 0:
            return True
        train = now - self._t0 - self._spent
        return self._spent + self._last_cost <= self.budget * train

    def step(self, model, step: int):
        """Audit ``model`` at ``step`` when the schedule says so: the step's record, else None."""
        return self.audit(model, step) if self.due(int(step)) else None

    # ------------------------------------------------------------------------------------ one audit
    def audit(self, model, step: int) -> dict:
        """Audit ``model`` now, as step ``step``: append the record (JSONL, TensorBoard), log first flags."""
        t = time.perf_counter()
        if self._t0 is None:
            self._t0 = t
        saved = _Saved(model)
        try:
            rep = self._audit(model, int(step))
        finally:
            saved.restore()
        rec = self._record(rep, int(step))
        self._write(rec)
        self._last_cost = time.perf_counter() - t
        self._spent += self._last_cost
        return rec

    def _audit(self, model, step: int) -> dict:
        from .families.audit.api import audit
        from .checkpoint import RawCheckpoint
        from .subject import Subject

        dev = next((str(p.device) for p in model.parameters()), "cpu")
        if self._batches is None:
            self._batches, self._info = _batches(self.spec, model, self.data, **self.split)
        sd = model.state_dict()
        dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values() if v.is_floating_point()})
        raw = RawCheckpoint(path=f"<live model at step {step}>", format="live", sha256="", trusted=False, content=None)
        sub = Subject(model=model, batches=self._batches, spec=self.spec, checkpoint=raw, state_dict=sd,
                      data_info=dict(self._info), device=dev, weight_dtypes=dtypes)
        return audit(sub, **self.args).to_dict()

    def _record(self, rep: dict, step: int) -> dict:
        from .families.trajectory.first import news
        from .families.trajectory.report import point_from_audit

        rec = point_from_audit(rep, step, "monitor")
        rec["checkpoint"] = None
        rec["first_flagged"] = news(rec, rep.get("thresholds") or {}, self._since, self.first_flagged)
        for f in rec["first_flagged"]:
            hit = self.first_flagged[f["id"]]
            where = f", starting at layer {hit['layer']}" if hit.get("layer") is not None else ""
            log.warning("fadiag: step %d: (%s) %s%s (value %s, threshold %s)", step, f["id"], hit["name"], where,
                        hit["value"], hit["threshold"])
        self.records += 1
        return rec

    def _write(self, rec: dict) -> None:
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, allow_nan=False, separators=(",", ":")) + "\n")
        w = self._tb()
        if w is not None:
            for name, v in scalars(rec).items():
                w.add_scalar(name, v, rec["step"])
            w.flush()

    def _tb(self):
        if self.tensorboard is None or self._writer is False:
            return None
        if self._writer is None:
            if hasattr(self.tensorboard, "add_scalar"):
                self._writer = self.tensorboard
            else:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:  # TensorBoard not installed: the JSONL only
                    self._writer = False
                    return None
                self._writer = SummaryWriter(str(self.tensorboard))
        return self._writer


def scalars(rec: dict) -> dict:
    """A record's TensorBoard scalars: fadiag/h_norm/l, fadiag/g_norm/l, growth, stability, fadiag/flag/<id>."""
    out = {}
    for key, tag in (("residual_norms", "h_norm"), ("bp_grad_norms", "g_norm")):
        for l, v in enumerate(rec.get(key) or []):
            if v is not None:
                out[f"fadiag/{tag}/{l}"] = float(v)
    for key in ("growth", "cross_batch_stability", "headline_acc"):
        if isinstance(rec.get(key), (int, float)):
            out[f"fadiag/{key}"] = float(rec[key])
    for f in rec.get("flags") or []:
        if f.get("flagged") is not None:
            out[f"fadiag/flag/{f['id']}"] = float(bool(f["flagged"]))
    return out


def _spec(spec, method_name, frozen_baseline_acc):
    import dataclasses

    from .spec import ModelSpec, Spec, load_spec_file, parse_spec

    if spec is None:
        sp = Spec(model=ModelSpec(arch="<live model>"), origin="<monitor>")
    elif isinstance(spec, Spec):
        sp = spec
    elif isinstance(spec, dict):
        sp = parse_spec({"model": {"arch": "<live model>"}, **spec}, origin="<monitor>")
    else:
        sp = load_spec_file(spec)
    a = sp.audit
    a = dataclasses.replace(a, method_name=method_name if method_name is not None else (a.method_name or "live"),
                            frozen_baseline_acc=frozen_baseline_acc if frozen_baseline_acc is not None
                            else a.frozen_baseline_acc)
    return dataclasses.replace(sp, audit=a)


def _batches(sp, model, data, *, batches=None, batch_size=None) -> tuple:
    """(batches, data info) as fadiag.subject.load_batches makes them from the spec, or from ``data``."""
    from .data import load_arrays, make_batches
    from .data import takes_tokens as _takes_tokens
    from .subject import _lm_labels, load_batches

    labels = "tokens" if _lm_labels(sp, model) else "class"
    if data is None or isinstance(data, (str, os.PathLike)):
        return load_batches(sp, model, data=None if data is None else str(data), batches=batches,
                            batch_size=batch_size, labels=labels)
    if isinstance(data, list):
        return list(data), {"source": "batches given to the monitor", "batches": len(data),
                            "batch_size": int(data[0][0].shape[0])}
    x, y = data
    d = sp.data
    nb, bs = batches or d.batches, batch_size or d.batch_size
    if not _takes_tokens(model):
        x = x.float()
    bl = make_batches(x, y, bs, nb, d.shuffle, d.seed, source="monitor data")
    return bl, {"source": "arrays given to the monitor", "batches": nb, "batch_size": bs, "seed": d.seed,
                "shuffle": d.shuffle}


# ------------------------------------------------------------------------------------ frameworks

def _module(root, attr):
    """The module audited: ``root`` or its ``attr`` ("model" when it has one and attr is None)."""
    if attr == "":
        return root
    m = getattr(root, attr or "model", None)
    if m is None and attr:
        raise ValueError(f"the trained module has no attribute {attr!r}")
    return m if m is not None and hasattr(m, "parameters") else root


def _lightning_class():
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError:
            raise ImportError("fadiag.callbacks.LightningCallback needs lightning: pip install lightning") from None

    class LightningCallback(Callback):
        """Audit the LightningModule's ``attr`` submodule (default: its ``model`` when it has one, else the
        module itself) after each training batch, at ``trainer.global_step``; scalars to the trainer's logger
        when ``log_metrics`` is True. Keyword arguments: those of Monitor."""

        def __init__(self, spec=None, *, attr: str | None = None, log_metrics: bool = True, **kw):
            self.monitor = Monitor(spec, **kw)
            self.attr, self.log_metrics = attr, log_metrics

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = int(trainer.global_step)
            rec = self.monitor.step(_module(pl_module, self.attr), step)
            if rec is not None and self.log_metrics and trainer.logger is not None:
                trainer.logger.log_metrics(scalars(rec), step=step)

    return LightningCallback


def _hf_class():
    try:
        from transformers import TrainerCallback as Base
    except ImportError:
        raise ImportError("fadiag.callbacks.TrainerCallback needs transformers: pip install transformers") from None

    class TrainerCallback(Base):
        """Audit the Hugging Face Trainer's model at the end of each optimiser step, at ``state.global_step``
        (the step its ``checkpoint-N`` folders carry). Keyword arguments: those of Monitor."""

        def __init__(self, spec=None, **kw):
            self.monitor = Monitor(spec, **kw)

        def on_step_end(self, args, state, control, model=None, **kw):
            if model is not None:
                self.monitor.step(model, int(state.global_step))
            return control

    return TrainerCallback


_CLASSES = {"LightningCallback": _lightning_class, "TrainerCallback": _hf_class}


def __getattr__(name: str):
    if name in _CLASSES:
        cls = _CLASSES[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module 'fadiag.callbacks' has no attribute {name!r}")


__all__ = ["Monitor", "LightningCallback", "TrainerCallback", "scalars"]
