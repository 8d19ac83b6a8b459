"""The options several commands share, declared once (``Annotated`` aliases), and how --help shows them.

Each command module declares only its own options; names, envvars and help texts here are part of the CLI
contract (DESIGN.md) and tests hold them.
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..render import Format


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


#: Help placeholders: by option name, else by the type typer would print as "<str>", "<path>", ...
METAVARS = {"threshold": "NAME=VALUE", "frozen_baseline": "train", "observation": "ROW|V1,V2,...",
            "feature_names": "NAME,...", "head_names": "NAME,...", "output": "FILE", "plot": "FILE",
            "matrix": "FILE.npy", "edges_out": "FILE.tsv", "stability_layer": "L", "trainable_blocks": "K"}
BY_TYPE = {"<path>": "FILE", "<float>": "X", "<int>": "N", "<int range>": "N", "<list[float]>": "X",
           "<list[Path]>": "FILE", "<str>": None, "<list[str]>": None}
#: Options whose default comes from the spec: option -> (spec section, field).
#: The kernel's; every family adds its own (its record's ``spec_defaults``: fadiag.registry).
SPEC_DEFAULTS = {"batches": ("data", "batches"), "batch_size": ("data", "batch_size"), "seed": ("data", "seed")}




def spec_defaults() -> dict:
    """option -> (spec section, field): the kernel's and every family's (fadiag.registry)."""
    from ..registry import spec_defaults as families

    return {**SPEC_DEFAULTS, **families()}


_opt = typer.Option


SpecOpt = Annotated[Optional[Path], _opt("--spec", envvar="FADIAG_SPEC", help="YAML model spec (default: <ckpt stem>"
                                         ".yaml beside the checkpoint, else a 'fadiag_spec' dict inside it).")]
FormatOpt = Annotated[Optional[Format], _opt("--format", "-f", envvar="FADIAG_FORMAT", help="Output format (default: "
                                             "table on a terminal, json otherwise).")]
OutputOpt = Annotated[Optional[str], _opt("--output", "-o", help="Write the report here (atomically) instead of "
                                          "stdout.")]
DataOpt = Annotated[Optional[Path], _opt("--data", envvar="FADIAG_DATA", help="Eval data file (.npz/.pt with x, y); "
                                         "overrides the spec.")]
BatchesOpt = Annotated[Optional[int], _opt("--batches", min=1, envvar="FADIAG_BATCHES",
                                           help="Number of disjoint eval batches.")]
BatchSizeOpt = Annotated[Optional[int], _opt("--batch-size", min=1, envvar="FADIAG_BATCH_SIZE",
                                             help="Rows per eval batch.")]
SeedOpt = Annotated[Optional[int], _opt("--seed", envvar="FADIAG_SEED", min=0, max=2**32 - 1,
                                        help="Seed for shuffling and random draws (0..2^32-1).")]
DeviceOpt = Annotated[Device, _opt("--device", envvar="FADIAG_DEVICE", help="Where to run the model.")]
ExitZeroOpt = Annotated[bool, _opt("--exit-zero", envvar="FADIAG_EXIT_ZERO",
                                   help="Exit 0 even when something is flagged.")]
TrustOpt = Annotated[bool, _opt("--trust-checkpoint", help="Allow arbitrary unpickling (runs code from the file!). "
                                "Recorded in the report.")]
TrustCodeOpt = Annotated[bool, _opt("--trust-code", help="Allow a spec found beside the checkpoint (sidecar) to "
                                    "import the module:Class it names (runs that code!). Not needed with --spec. "
                                    "Recorded in the report.")]
QuietOpt = Annotated[bool, _opt("--quiet", "-q", envvar="FADIAG_QUIET", help="No progress or summaries on stderr.")]
ThreadsOpt = Annotated[Optional[int], _opt("--threads", min=1, max=1024, help="torch intra-op threads (default: "
                                           "OMP_NUM_THREADS, else every core for a large model or edge "
                                           "correlation, else 1).")]
JobsOpt = Annotated[int, _opt("--jobs", "-j", min=1, max=1024, help="Run the checkpoints in N worker processes "
                              "(1 thread each); same output as --jobs 1.")]
ResumeOpt = Annotated[Optional[Path], _opt("--resume", help="Sweep journal FILE.jsonl: append each report as it "
                                           "finishes; skip checkpoints already in it.")]
SchedulerOpt = Annotated[Optional[str], _opt("--scheduler", envvar="FADIAG_SCHEDULER", help="Run the checkpoints on "
                                             "a dask.distributed cluster, tcp://HOST:PORT (the 'dask' extra).")]
MoreOpt = Annotated[Optional[List[Path]], typer.Argument(help="More checkpoints: a sweep (--jobs, --resume, "
                                                         "--scheduler).", show_default=False)]


def _shared(**specs) -> dict:
    kw = inspect.Parameter.KEYWORD_ONLY
    return {name: inspect.Parameter(name, kw, annotation=a, default=d) for name, (a, d) in specs.items()}


#: The parameters several commands share, with their defaults: a command names the ones it has (``app.command``)
#: and receives them in ``**shared``.
SHARED = _shared(more=(MoreOpt, None), spec=(SpecOpt, None), format=(FormatOpt, None), output=(OutputOpt, None),
                 data=(DataOpt, None), batches=(BatchesOpt, None), batch_size=(BatchSizeOpt, None),
                 seed=(SeedOpt, None), device=(DeviceOpt, Device.cpu), exit_zero=(ExitZeroOpt, False), trust_checkpoint=(TrustOpt, False),
                 trust_code=(TrustCodeOpt, False), quiet=(QuietOpt, False), threads=(ThreadsOpt, None),
                 jobs=(JobsOpt, 1), resume=(ResumeOpt, None), scheduler=(SchedulerOpt, None))


def plot_opt(help: str):
    """A command's --plot FILE (checked up front: suffix, the 'plot' extra)."""
    return Annotated[Optional[str], _opt("--plot", help=help)]


def polish_help(commands: dict) -> None:
    """Readable help without touching each option: NAME placeholders instead of typer's ``<list[Path]>`` /
    ``{checkpoints}``, arguments the project config can supply not marked [required] (still enforced, in
    the same one-line error), and the defaults that come from the spec named."""
    import dataclasses

    from typer._click.exceptions import MissingParameter
    from typer.core import TyperArgument

    from .. import spec as S

    sections = {f.name: f.default_factory() for f in dataclasses.fields(S.Spec)
                if f.default_factory is not dataclasses.MISSING}

    def needed(ctx, param, value, _orig=None):
        if value is None or value == () or value == []:
            raise MissingParameter(ctx=ctx, param=param)
        return _orig(ctx, param, value) if _orig else value

    for cmd in commands.values():
        for p in cmd.params:
            if isinstance(p, TyperArgument):
                p.metavar = p.name.upper().replace("_FILE", "").rstrip("S") if p.nargs != 1 else p.name.upper()
                p.display_type_rich = lambda ctx: ""
                if p.required:  # fadiag.yaml may supply it: say so by not claiming [required], but enforce it
                    p.required = False
                    p.callback = lambda ctx, param, v, _o=p.callback: needed(ctx, param, v, _o)
                continue
            _polish_option(p, sections)


def _polish_option(p, sections: dict) -> None:
    shown = p.display_type(None) if hasattr(p, "type_descriptor") and not p.type_descriptor.is_choice else None
    if shown in BY_TYPE or p.name in METAVARS:
        mv = METAVARS.get(p.name) or BY_TYPE.get(shown) or p.name.upper()
        p.display_type_rich = lambda ctx, _m=mv: _m
    defaults = spec_defaults()
    if p.name in defaults and p.default is None:
        sec, fld = defaults[p.name]
        v = getattr(sections[sec], fld)
        v = ", ".join(map(str, v)) if isinstance(v, list) else v
        if v is None and fld == "batch_size":
            v = "128 (data.source digits: what fits its 360-row test split)"
        p.show_default = f"{sec}.{fld} in the spec, else {v}"
