"""What the checkpoint commands (audit, credit, edges, relevance) share: their per-checkpoint options as one dict
(the same dict ``fadiag.run.sweep`` hands to worker processes), one checkpoint in this process, or a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from ..errors import InputError
from ..render import Format
from .options import Device
from .output import default_format, emit, finish, progress_for, with_settings

#: per-checkpoint options the commands share, taken from the command's parameters when it has them
_SHARED = ("batches", "batch_size", "seed", "threads")


def _path(v) -> Optional[str]:
    return str(v) if v else None


def checkpoint_opts(ctx, **own) -> dict:
    """The options one checkpoint runs with: loading (spec, data, trust, device, ...), the command's shared
    options, and its ``own``. Plain values only: they travel to worker processes and key the journal."""
    from ..config import given_on_command_line

    p = ctx.params
    o = dict(spec=_path(p.get("spec")), trust=bool(p.get("trust_checkpoint")), trust_code=bool(p.get("trust_code")),
             data=_path(p.get("data")), device=check_device(p.get("device") or Device.cpu), quiet=bool(p.get("quiet")))
    if o["spec"] and not given_on_command_line(ctx, "spec"):  # from FADIAG_SPEC or the config: discovered
        o["spec_found"] = True
    o.update({k: p[k] for k in _SHARED if k in p})
    return dict(o, **{k: str(v) if isinstance(v, Path) else v for k, v in own.items()})


def check_device(device: Device) -> str:
    if device == Device.cuda:
        import torch

        if not torch.cuda.is_available():
            raise InputError("CUDA is not available on this machine; use --device cpu", source="--device")
    return device.value


def parse_thresholds(items: Optional[List[str]]) -> dict:
    out = {}
    for it in items or []:
        name, sep, value = it.partition("=")
        if not sep or not name.strip():
            raise InputError(f"expected NAME=VALUE, got {it!r}", source="--threshold")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"{name.strip()} must be a number, got {value!r}", source="--threshold") from None
    return out


def is_sweep(ctx, **single_outputs) -> bool:
    """A sweep was asked for (more checkpoints, --jobs, --resume, --scheduler); the outputs only one checkpoint
    can have (``single_outputs``: option -> value) are refused with it."""
    p = ctx.params
    if not (p.get("more") or p.get("jobs", 1) > 1 or p.get("resume") or p.get("scheduler")):
        return False
    for opt, v in single_outputs.items():
        if v:
            raise InputError("writes one checkpoint's result: not with a sweep (more checkpoints, --jobs, "
                             "--resume, --scheduler)", source=opt)
    return True


def one(ctx, kind: str, path, opts: dict) -> tuple:
    """One checkpoint in this process, with progress bars: (typed report, the extra result, e.g. edges' W)."""
    from ..run.sweep import one as run_one

    return run_one(kind, str(path), opts, progress_for(ctx))


def sweep(ctx, kind: str, paths, opts: dict, *, plot: Optional[str] = None) -> int:
    """The command over ``paths`` through fadiag.run.sweep (in-process, --jobs workers or --scheduler): the reports
    in input order, JSONL streamed as soon as each report and those before it are in."""
    from ..reports import from_dict
    from ..run.sweep import run_sweep

    p = ctx.params
    fmt = default_format(p.get("format"), p.get("output"))
    stream = fmt == Format.jsonl and not p.get("output")

    def on_report(i: int, d: dict) -> None:
        emit([with_settings(from_dict(d), ctx)], fmt, None)

    dicts = run_sweep(kind, [str(c) for c in paths], opts, jobs=p.get("jobs", 1), scheduler=p.get("scheduler") or None,
                      resume=_path(p.get("resume")), progress=progress_for(ctx),
                      on_report=on_report if stream else None)
    return finish(ctx, [from_dict(d) for d in dicts], plot=plot, labels=[str(c) for c in paths], streamed=stream)
