"""fadiag's command line. Each command is thin: parse -> API -> render -> exit code.

torch is never imported at module level here, so ``fadiag --help`` stays instant.
stdout carries the report only; progress, warnings and summaries go to stderr.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, List, Optional

import typer

from . import __version__
from .errors import EXIT_BAD_INPUT, EXIT_FLAGGED, EXIT_INTERNAL, EXIT_OK, FadiagError, InputError
from .render import Format

from typer.core import TyperGroup


#: Help placeholders: by option name, else by the type typer would print as "<str>", "<path>", ...
_METAVARS = {"threshold": "NAME=VALUE", "frozen_baseline": "train", "observation": "ROW|V1,V2,...",
             "feature_names": "NAME,...", "head_names": "NAME,...", "output": "FILE", "plot": "FILE",
             "matrix": "FILE.npy", "edges_out": "FILE.tsv", "stability_layer": "L", "trainable_blocks": "K"}
_BY_TYPE = {"<path>": "FILE", "<float>": "X", "<int>": "N", "<int range>": "N", "<list[float]>": "X",
            "<list[Path]>": "FILE", "<str>": None, "<list[str]>": None}
#: Options whose default comes from the spec: option -> (spec section, field).
_SPEC_DEFAULTS = {"batches": ("data", "batches"), "batch_size": ("data", "batch_size"), "seed": ("data", "seed"),
                  "growth": ("audit", "growth"), "signal": ("credit", "signal"), "eps": ("credit", "eps"),
                  "n_dirs": ("credit", "n_dirs"), "eta": ("credit", "etas"), "method": ("edges", "method"),
                  "where": ("edges", "where"), "norm": ("edges", "norm"), "agg": ("edges", "agg"),
                  "loss": ("edges", "loss"), "penalty": ("edges", "penalty")}


def _polish_help(commands: dict) -> None:
    """Readable help without touching each option: NAME placeholders instead of typer's ``<list[Path]>`` /
    ``{checkpoints}``, arguments the project config can supply not marked [required] (still enforced, in
    the same one-line error), and the defaults that come from the spec named."""
    import dataclasses

    from typer._click.exceptions import MissingParameter
    from typer.core import TyperArgument

    from . import spec as S

    sections = {f.name: f.default_factory() for f in dataclasses.fields(S.Spec) if f.default_factory is not dataclasses.MISSING}

    def needed(ctx, param, value, _orig=None):
        if value is None or value == () or value == []:
            raise MissingParameter(ctx=ctx, param=param)
        return _orig(ctx, param, value) if _orig else value

    for cmd in commands.values():
        for p in cmd.params:
            shown = p.display_type(None) if hasattr(p, "type_descriptor") and not p.type_descriptor.is_choice else None
            if isinstance(p, TyperArgument):
                p.metavar = p.name.upper().replace("_FILE", "").rstrip("S") if p.nargs != 1 else p.name.upper()
                p.display_type_rich = lambda ctx: ""
                if p.required:  # fadiag.yaml may supply it: say so by not claiming [required], but enforce it
                    p.required = False
                    p.callback = lambda ctx, param, v, _o=p.callback: needed(ctx, param, v, _o)
                continue
            if shown in _BY_TYPE or p.name in _METAVARS:
                mv = _METAVARS.get(p.name) or _BY_TYPE.get(shown) or p.name.upper()
                p.display_type_rich = lambda ctx, _m=mv: _m
            if p.name in _SPEC_DEFAULTS and p.default is None:
                sec, fld = _SPEC_DEFAULTS[p.name]
                v = getattr(sections[sec], fld)
                v = ", ".join(map(str, v)) if isinstance(v, list) else v
                p.show_default = f"{sec}.{fld} in the spec, else {v}"


class OneLineErrors(TyperGroup):
    """Usage errors (a bad flag, a missing argument, a value out of range) as ONE line on stderr, exit 2,
    like every other bad input: click's own multi-line usage block would break the stderr contract."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        _polish_help(self.commands)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from typer import Abort
        try:  # Typer 0.2x vendors click as typer._click; older Typer runs on click itself
            from typer._click.exceptions import ClickException
        except ImportError:  # pragma: no cover - exercised by the lowest-versions check (README)
            from click.exceptions import ClickException

        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":
                e.show()
                code = e.exit_code
            else:
                where = getattr(getattr(e, "ctx", None), "command_path", None) or "fadiag"
                err(f"fadiag: error: {' '.join(e.format_message().split())} (see '{where} --help')")
                code = EXIT_BAD_INPUT
        except Abort:
            err("fadiag: aborted")
            code = 130
        else:
            code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="fadiag",
    cls=OneLineErrors,
    help="Audit trained checkpoints: can this network's published numbers be trusted?\n\n"
         "Exit codes: 0 nothing flagged, 1 something flagged, 2 bad input, 3 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


# ----------------------------------------------------------------------------------------- plumbing

class Ctx:
    """Per-invocation switches every command shares."""

    debug = False
    quiet = False


def err(msg: str) -> None:
    """One line to stderr, control characters escaped (names from files cannot drive the terminal)."""
    from .text import escape_controls

    sys.stderr.write(escape_controls(str(msg).rstrip("\n")) + "\n")


def run_guarded(fn: Callable[[], int]) -> None:
    """Run a command body; map FadiagError to its exit code with one line on stderr, never a traceback."""
    try:
        code = fn()
    except FadiagError as e:
        err(f"fadiag: error: {e}")
        if Ctx.debug:
            import traceback

            traceback.print_exc()
        raise typer.Exit(e.exit_code)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err("fadiag: interrupted")
        raise typer.Exit(130)
    except MemoryError:
        err("fadiag: error: out of memory; lower --batches/--batch-size/--row-chunk")
        raise typer.Exit(EXIT_BAD_INPUT)
    except Exception as e:  # a bug: short message, exit 3
        err(f"fadiag: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
            "(rerun as 'fadiag --debug COMMAND ...' for the traceback)")
        if Ctx.debug:
            import traceback

            traceback.print_exc()
        raise typer.Exit(EXIT_INTERNAL)
    raise typer.Exit(code)


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and a rename: never a partial file."""
    from .atomic import write_text

    check_output_path(path, "--output")
    write_text(path, text)


def check_output_path(path: str, option: str) -> Path:
    """An output path must name a regular file (or none yet) in an existing, writable folder: checked before
    any work is done."""
    if not str(path).strip():
        raise InputError("empty path", source=option)
    p = Path(path)
    if p.is_dir():
        raise InputError("is a directory, not a file", source=f"{option} {path}")
    if p.exists() and not p.is_file():
        raise InputError("is not a regular file (a pipe or device); write to a file", source=f"{option} {path}")
    folder = _resolve(p, f"{option} {path}").parent
    if not folder.is_dir():
        raise InputError("folder does not exist", source=f"{option} {path}")
    if not os.access(folder, os.W_OK):
        raise InputError("folder is not writable", source=f"{option} {path}")
    try:  # os.access says yes to root everywhere (/sys, /proc, read-only mounts): try to create a file there
        import tempfile

        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fadiag-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"cannot create a file in that folder ({e.strerror or type(e).__name__})",
                         source=f"{option} {path}") from None
    return p


INPUT_PARAMS = ("checkpoints", "checkpoint", "more", "spec", "data", "init", "tensors", "truth", "held_out", "report_file",
                "reports", "baseline", "paths")
OUTPUT_PARAMS = (("output", "--output"), ("plot", "--plot"), ("matrix", "--matrix"), ("edges_out", "--edges"),
                 ("resume", "--resume"))


def _resolve(p: Path, where: str) -> Path:
    """``p.resolve()``, with a symlink loop as bad input (Python raises RuntimeError or OSError for it)."""
    try:
        return p.resolve()
    except (RuntimeError, OSError):
        raise InputError("symlink loop (the path cannot be resolved)", source=where) from None


def _check_input_path(p: Path, where: str) -> Path:
    """An input must not be a pipe, socket or device (reading one could block forever): said up front."""
    r = _resolve(p, where)
    try:
        import stat

        mode = os.stat(r).st_mode
    except OSError:
        return r  # missing: the reader says "no such file"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError("not a regular file (a pipe, socket or device)", source=where)
    return r


def preflight(ctx) -> None:
    """Before a command does any work: take its --quiet, and check every file it will write: a regular file
    in a writable folder, never one of the command's inputs, never another of its outputs."""
    Ctx.quiet = bool(ctx.params.get("quiet"))
    inputs = set()
    for name in INPUT_PARAMS:
        v = ctx.params.get(name)
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if x:
                inputs.add(_check_input_path(Path(str(x)), str(x)))
    seen = {}
    for name, opt in OUTPUT_PARAMS:
        v = ctx.params.get(name)
        if v is None:
            continue
        check_output_path(str(v), opt)
        r = _resolve(Path(str(v)), f"{opt} {v}")
        if r in inputs:
            raise InputError("is also an input of this command; refusing to overwrite it", source=f"{opt} {v}")
        if r in seen:
            raise InputError(f"is also the {seen[r]} file", source=f"{opt} {v}")
        seen[r] = opt
    if ctx.params.get("plot"):
        from .render.plot import SUFFIXES, _plt

        if Path(str(ctx.params["plot"])).suffix.lower() not in SUFFIXES:
            raise InputError(f"plot file must end in {', '.join(SUFFIXES)}", source=f"--plot {ctx.params['plot']}")
        _plt()  # the 'plot' extra must be installed: say so now, not after the work


def default_format(fmt: Optional[Format], output: Optional[str] = None) -> Format:
    """table on a terminal, json when piped or written with --output."""
    if fmt is not None:
        return fmt
    return Format.table if (sys.stdout.isatty() and not output) else Format.json


def emit(reports: list, fmt: Format, output: Optional[str], **opts) -> None:
    from .render import render
    from .text import escape_json_text, sanitize

    if fmt not in (Format.json, Format.jsonl):  # JSON escapes strings itself, losslessly (escape_json_text)
        reports = [sanitize(r, markup=fmt == Format.table) for r in reports]
    color = output is None and fmt == Format.table and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    text = render(reports, fmt, color=color, **opts)  # table width: rich's own detection (terminal, $COLUMNS, 80)
    if fmt in (Format.json, Format.jsonl):
        text = escape_json_text(text)
    if output:
        write_atomic(output, text)
        if not Ctx.quiet:
            err(f"fadiag: wrote {fmt.value} report to {output}")
    else:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head` closed the pipe: the reader has what it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())


def say_verdicts(items: list, fmt: Format, output: Optional[str]) -> None:
    """The one-line verdict per report on stderr, AFTER the report. Not when the table itself just went to
    the terminal: it ends on the same verdict, and a terminal would show it twice."""
    if Ctx.quiet or (fmt == Format.table and not output and sys.stdout.isatty()):
        return
    for label, verdict in items:
        err(f"fadiag: {label}: {verdict}")


class Progress:
    """A rich progress bar on stderr when stderr is a terminal and not --quiet; silent otherwise. It shows
    from the moment it is entered (a spinner and the elapsed time, before the first step is counted), so
    loading and the first forward pass are never a silent wait."""

    def __init__(self, label: str):
        self.label, self.bar, self.task = label, None, None
        if not Ctx.quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, SpinnerColumn, TimeElapsedColumn

            self.bar = RP(SpinnerColumn(), "[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    def __enter__(self):
        if self.bar:
            self.bar.start()
            from .text import sanitize

            self.task = self.bar.add_task(sanitize(self.label, markup=True), total=None)
        return self

    def __call__(self, done: int, total: int, label: str | None = None) -> None:
        if not self.bar:
            return
        from .text import sanitize

        desc = sanitize(label or self.label, markup=True)
        self.bar.update(self.task, completed=done, total=total, description=desc)

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()


def warn_half(subject) -> None:
    """CHECKLIST fp16: half-precision weights are upcast; say so (the report records weight_dtypes)."""
    for note in getattr(subject.checkpoint, "notes", ()) if not Ctx.quiet else ():
        err(f"fadiag: warning: {subject.path}: {note}")
    half = [d for d in subject.weight_dtypes if d in ("float16", "bfloat16")]
    if half and not Ctx.quiet:
        err(f"fadiag: warning: {subject.path}: {', '.join(half)} weights; fadiag computes in float32 "
            "(norms, cosines and correlations in float64), so small gradients are not flushed to zero")


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


def finish(rep: dict, ctx, fmt: Optional[Format], output: Optional[str], exit_zero: bool, *,
           plot: Optional[str] = None, label: Optional[str] = None) -> int:
    """Record settings, draw --plot, render the report to stdout/--output, then say the verdict on stderr
    (under ``label``), and return the exit code of its flags."""
    if "settings" not in rep:
        rep = with_settings(rep, ctx)
    if plot:
        from .render.plot import plot_reports

        plot_reports([rep], plot)
    fmt = default_format(fmt, output)
    emit([rep], fmt, output)
    if label:
        say_verdicts([(label, rep["verdict"])], fmt, output)
    return exit_code(any(f.get("flagged") for f in rep.get("flags") or []), exit_zero)


def run_sweep_cli(ctx, kind: str, paths, opts: dict, fmt, output, exit_zero: bool, jobs: int, resume, scheduler,
                  plot: Optional[str] = None) -> int:
    """A command over many checkpoints through fadiag.sweep (in-process, --jobs workers or --scheduler): the
    reports in input order, JSONL streamed as soon as each report and those before it are in."""
    from .sweep import run_sweep, without_backend

    fmt = default_format(fmt, output)
    stream = fmt == Format.jsonl and not output
    dicts = run_sweep(kind, [str(c) for c in paths], opts, jobs=jobs, scheduler=scheduler or None,
                      resume=str(resume) if resume else None, progress=Progress,
                      on_report=(lambda i, r: emit([without_backend(with_settings(r, ctx))], fmt, None))
                      if stream else None)
    dicts = [without_backend(with_settings(d, ctx)) for d in dicts]
    if plot:
        from .render.plot import plot_reports

        plot_reports(dicts, plot)
    if not stream:
        emit(dicts, fmt, output)
    if kind == "audit":
        say_verdicts([(p, d["verdict"]) for p, d in zip(paths, dicts)], fmt, output)
    return exit_code(any(f.get("flagged") for d in dicts for f in d["flags"]), exit_zero)


def _is_sweep(more, jobs, resume, scheduler, single_outputs: dict) -> bool:
    """A sweep was asked for; the outputs that only one checkpoint can have are refused."""
    if not (more or jobs > 1 or resume or scheduler):
        return False
    for opt, v in single_outputs.items():
        if v:
            raise InputError("writes one checkpoint's result: not with a sweep (more checkpoints, --jobs, "
                             "--resume, --scheduler)", source=opt)
    return True


def exit_code(flagged: bool, exit_zero: bool) -> int:
    return EXIT_FLAGGED if flagged and not exit_zero else EXIT_OK


def version_cb(value: bool):
    if value:
        typer.echo(f"fadiag {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_cb(
    version: Annotated[Optional[bool], typer.Option("--version", callback=version_cb, is_eager=True,
                                                     help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for internal errors.")] = False,
):
    Ctx.debug = debug
    Ctx.quiet = False  # per invocation: commands that take --quiet set it again


# Shared option types -----------------------------------------------------------------------------
SpecOpt = Annotated[Optional[Path], typer.Option("--spec", envvar="FADIAG_SPEC", help="YAML model spec (default: <ckpt stem>.yaml beside "
                                                 "the checkpoint, else a 'fadiag_spec' dict inside it).")]
FormatOpt = Annotated[Optional[Format], typer.Option("--format", "-f", envvar="FADIAG_FORMAT", help="Output format (default: table on a "
                                                     "terminal, json otherwise).")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="Write the report here (atomically) "
                                                  "instead of stdout.")]
DataOpt = Annotated[Optional[Path], typer.Option("--data", envvar="FADIAG_DATA", help="Eval data file (.npz/.pt with x, y); "
                                                 "overrides the spec.")]
BatchesOpt = Annotated[Optional[int], typer.Option("--batches", min=1, envvar="FADIAG_BATCHES", help="Number of disjoint eval batches.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", min=1, envvar="FADIAG_BATCH_SIZE", help="Rows per eval batch.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", envvar="FADIAG_SEED", min=0, max=2**32 - 1,
                                                help="Seed for shuffling and random draws (0..2^32-1).")]
DeviceOpt = Annotated[Device, typer.Option("--device", envvar="FADIAG_DEVICE", help="Where to run the model.")]
ExitZeroOpt = Annotated[bool, typer.Option("--exit-zero", envvar="FADIAG_EXIT_ZERO", help="Exit 0 even when something is flagged.")]
TrustOpt = Annotated[bool, typer.Option("--trust-checkpoint", help="Allow arbitrary unpickling (runs code from "
                                        "the file!). Recorded in the report.")]
TrustCodeOpt = Annotated[bool, typer.Option("--trust-code", help="Allow a spec found beside the checkpoint "
                                            "(sidecar) to import the module:Class it names (runs that code!). "
                                            "Not needed with --spec. Recorded in the report.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", envvar="FADIAG_QUIET", help="No progress or summaries on stderr.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, max=1024, help="torch intra-op threads (default: "
                                                   "OMP_NUM_THREADS, else 1; all cores for a large edge correlation).")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", min=1, max=1024, help="Run the checkpoints in N worker "
                                      "processes (1 thread each); same output as --jobs 1.")]
ResumeOpt = Annotated[Optional[Path], typer.Option("--resume", help="Sweep journal FILE.jsonl: append each report "
                                                   "as it finishes; skip checkpoints already in it.")]
SchedulerOpt = Annotated[Optional[str], typer.Option("--scheduler", envvar="FADIAG_SCHEDULER", help="Run the "
                                                     "checkpoints on a dask.distributed cluster, tcp://HOST:PORT "
                                                     "(the 'dask' extra).")]
MoreOpt = Annotated[Optional[List[Path]], typer.Argument(help="More checkpoints: a sweep (--jobs, --resume, "
                                                         "--scheduler).", show_default=False)]


def _check_device(device: Device) -> str:
    if device == Device.cuda:
        import torch

        if not torch.cuda.is_available():
            raise InputError("CUDA is not available on this machine; use --device cpu", source="--device")
    return device.value


# ------------------------------------------------------------------------------------------- audit

@app.command(epilog='\x08\nExamples:\n  fadiag audit checkpoints_example/resmlp_dfa.pt\n  fadiag audit ckpts/*.pt --format jsonl -q | jq -r .verdict\n  fadiag audit ckpt.pt --frozen-baseline train --plot audit.png')
def audit(
    ctx: typer.Context,
    checkpoints: Annotated[List[Path], typer.Argument(help="Checkpoint file(s): .pt/.pth, .safetensors, .npz "
                                                      "(default: audit.checkpoints in the project config).",
                                                      show_default=False)],
    spec: SpecOpt = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    threshold: Annotated[Optional[List[str]], typer.Option(
        "--threshold", "-t", envvar="FADIAG_THRESHOLD", help="Override a threshold, NAME=VALUE (g_norm_floor, h_norm_explosion_ratio, "
                                  "stability_drift_ceiling, frozen_acc_margin_pp). Repeatable.")] = None,
    frozen_baseline_acc: Annotated[Optional[float], typer.Option(
        "--frozen-baseline-acc", help="Accuracy (0-1) of the frozen-random-blocks baseline, for diagnostic (d).")] = None,
    frozen_baseline: Annotated[Optional[str], typer.Option(
        "--frozen-baseline", help="'train': train the architecture-matched frozen-blocks baseline on the "
                                  "spec's data.train_path (documented recipe) and use its accuracy.")] = None,
    trainable_blocks: Annotated[int, typer.Option(
        "--trainable-blocks", min=0, help="Depth ladder: with --frozen-baseline train, also train the last K "
                                          "blocks (0 = the frozen-blocks baseline).")] = 0,
    headline_acc: Annotated[Optional[float], typer.Option(
        "--headline-acc", help="Headline accuracy (0-1) to judge; default: computed on the eval batches.")] = None,
    growth: Annotated[Optional[str], typer.Option(
        "--growth", help="(a) variant: ratio_to_h0 (published default) or per_block (ViT-safe).")] = None,
    stability_layer: Annotated[Optional[int], typer.Option(
        "--stability-layer", help="Layer l* for (c); default max(1, (L+1)//2).")] = None,
    jobs: JobsOpt = 1,
    resume: ResumeOpt = None,
    scheduler: SchedulerOpt = None,
    threads: ThreadsOpt = None,
    plot: Annotated[Optional[str], typer.Option(
        "--plot", help="Also draw per-layer ‖h_l‖/‖g_l‖ (log), stability and accuracy to FILE.png|svg|pdf "
                       "(needs the 'plot' extra).")] = None,
    data: DataOpt = None,
    batches: BatchesOpt = None,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = Device.cpu,
    exit_zero: ExitZeroOpt = False,
    trust_checkpoint: TrustOpt = False,
    trust_code: TrustCodeOpt = False,
    quiet: QuietOpt = False,
):
    """Run the four-diagnostic protocol (residual scale, BP reference validity, cross-batch stability,
    frozen-random baseline) and print a verdict. Exit 1 if anything is flagged."""
    Ctx.quiet = quiet

    def body() -> int:
        preflight(ctx)
        thr = parse_thresholds(threshold)
        if frozen_baseline is not None and frozen_baseline != "train":
            raise InputError(f"expected 'train', got {frozen_baseline!r}", source="--frozen-baseline")
        if trainable_blocks and frozen_baseline != "train":
            raise InputError("only meaningful with --frozen-baseline train", source="--trainable-blocks")
        if frozen_baseline is not None and frozen_baseline_acc is not None:
            raise InputError("give either --frozen-baseline-acc or --frozen-baseline train, not both",
                             source="--frozen-baseline")
        # per checkpoint: fadiag.sweep._audit

        opts = dict(spec=str(spec) if spec else None, trust=trust_checkpoint, trust_code=trust_code,
                    data=str(data) if data else None,
                    batches=batches, batch_size=batch_size, seed=seed, device=_check_device(device), thresholds=thr,
                    headline_acc=headline_acc, frozen_baseline_acc=frozen_baseline_acc,
                    frozen_baseline=frozen_baseline, trainable_blocks=trainable_blocks, growth=growth,
                    stability_layer=stability_layer, quiet=quiet, threads=threads)
        return run_sweep_cli(ctx, "audit", checkpoints, opts, format, output, exit_zero, jobs, resume, scheduler,
                             plot=plot)

    run_guarded(body)


# ------------------------------------------------------------------------------------------ credit

@app.command(epilog='\x08\nExamples:\n  fadiag credit checkpoints_example/resmlp_dfa.pt\n  fadiag credit ckpt.pt --signal bp --eta 0.01 --eta 0.1\n  fadiag credit --toy-lq')
def credit(
    ctx: typer.Context,
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Checkpoint file (not needed with --toy-lq).")] = None,
    more: MoreOpt = None,
    signal: Annotated[Optional[str], typer.Option(
        "--signal", help="Credit signal a_l: bp | dfa (training-time feedback in the checkpoint) | fa | "
                         "value (dV/dh of a stored value net) | tensors | "
                         "random (a control). Default: credit.signal in the spec.")] = None,
    init: Annotated[Optional[Path], typer.Option("--init", help="Init checkpoint, for feature drift M_l.")] = None,
    tensors: Annotated[Optional[Path], typer.Option("--tensors", help="Precomputed a_l (.pt/.npz) for --signal tensors.")] = None,
    eps: Annotated[Optional[float], typer.Option("--eps", help="Perturbation size ε for ρ_l (default 1e-3).")] = None,
    n_dirs: Annotated[Optional[int], typer.Option("--n-dirs", help="Random directions M for ρ_l (default 32).")] = None,
    eta: Annotated[Optional[List[float]], typer.Option("--eta", help="Nudging step η (repeatable; default 0.01).")] = None,
    toy_lq: Annotated[bool, typer.Option("--toy-lq", help="Run the exact-costate check on the built-in toy "
                                         "linear-quadratic system (BP ≈ 1, DFA ≈ 0).")] = False,
    toy_d: Annotated[int, typer.Option("--toy-d", help="Toy LQ width.")] = 16,
    toy_depth: Annotated[int, typer.Option("--toy-depth", help="Toy LQ depth L.")] = 6,
    threads: ThreadsOpt = None,
    jobs: JobsOpt = 1,
    resume: ResumeOpt = None,
    scheduler: SchedulerOpt = None,
    plot: Annotated[Optional[str], typer.Option(
        "--plot", help="Per-layer Γ_l, ρ_l and the norms to FILE.png|svg|pdf (needs the 'plot' extra).")] = None,
    threshold: Annotated[Optional[List[str]], typer.Option(
        "--threshold", "-t", help="NAME=VALUE: rho_deep_floor (0.5), g_norm_floor (1e-7). Repeatable.")] = None,
    spec: SpecOpt = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    data: DataOpt = None,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = Device.cpu,
    exit_zero: ExitZeroOpt = False,
    trust_checkpoint: TrustOpt = False,
    trust_code: TrustCodeOpt = False,
    quiet: QuietOpt = False,
):
    """Per-layer credit-assignment metrics: Γ_l (offline BP cosine, with ‖a‖ and ‖g‖), ρ_l (perturbation
    correlation), Δ_l (nudging), M_l (feature drift), deep-only and all-layer means. Exit 1 if flagged."""
    Ctx.quiet = quiet

    def body() -> int:
        preflight(ctx)
        from .credit_api import credit as run_credit, toy_lq as run_toy
        from .sweep import apply_threads

        if _is_sweep(more, jobs, resume, scheduler, {"--plot": plot, "--toy-lq": toy_lq}):
            opts = dict(spec=str(spec) if spec else None, trust=trust_checkpoint, trust_code=trust_code,
                        data=str(data) if data else None,
                        batch_size=batch_size, seed=seed, device=_check_device(device), signal=signal,
                        init=str(init) if init else None, tensors=str(tensors) if tensors else None, eps=eps,
                        n_dirs=n_dirs, eta=eta, thresholds=parse_thresholds(threshold), threads=threads)
            return run_sweep_cli(ctx, "credit", [checkpoint, *(more or [])], opts, format, output, exit_zero, jobs, resume,
                                 scheduler)
        runtime = apply_threads(threads)
        if toy_lq:
            rep = run_toy(d=toy_d, depth=toy_depth, batch=batch_size or 64, seed=seed or 0)
        else:
            if checkpoint is None:
                raise InputError("give a checkpoint, or --toy-lq", source="fadiag credit")
            from .subject import load

            subject = load(str(checkpoint), str(spec) if spec else None, trust=trust_checkpoint, trust_code=trust_code,
                           data=str(data) if data else None, batches=1, batch_size=batch_size, seed=seed,
                           device=_check_device(device))
            warn_half(subject)
            with Progress(f"credit metrics for {checkpoint.name}") as prog:
                rep = run_credit(subject, signal=signal, init_path=str(init) if init else None,
                                 tensors_path=str(tensors) if tensors else None, eps=eps, n_dirs=n_dirs,
                                 etas=eta, seed=seed, thresholds=parse_thresholds(threshold), progress=prog)
        rep = rep.replace(runtime=runtime).to_dict()  # a CreditReport; the CLI speaks dicts
        return finish(rep, ctx, format, output, exit_zero, plot=plot, label=str(checkpoint or "toy LQ"))

    run_guarded(body)


# ------------------------------------------------------------------------------------------- edges

@app.command(epilog='\x08\nExamples:\n  fadiag edges checkpoints_example/gsnn/gsnn.pt --row-chunk 1024\n  fadiag edges g.pt --bootstrap 20 --samples 2000 --edges ranked.tsv --matrix W.npy')
def edges(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Argument(help="Graph-structured network checkpoint (arch gsnn).")],
    more: MoreOpt = None,
    method: Annotated[Optional[str], typer.Option("--method", help="spearman (average-rank ties) | pearson.")] = None,
    row_chunk: Annotated[Optional[int], typer.Option(
        "--row-chunk", envvar="FADIAG_ROW_CHUNK",
        help="Rows of the N x N evidence matrix per GEMM: bounds peak memory to ~row_chunk*(N+M)*4 bytes.")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(
        "--bootstrap", help="Average over ITERS seeded resamples of the observations (with replacement).")] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", help="Rows per bootstrap resample (default M).")] = None,
    penalty: Annotated[Optional[float], typer.Option(
        "--penalty", help="Known-edge penalty α: W *= (1-α)^indeg_known(j) (1+α)^outdeg_known(i).")] = None,
    scale_by_act_mean: Annotated[Optional[bool], typer.Option(
        "--scale-by-act-mean/--no-scale-by-act-mean", help="Multiply row i by node i's mean activity.")] = None,
    truth: Annotated[Optional[Path], typer.Option("--truth", help="True edge list (TSV/CSV/npy) for MRR.")] = None,
    held_out: Annotated[Optional[Path], typer.Option(
        "--held-out", help="Score only these query edges (others in --truth are masked).")] = None,
    top: Annotated[int, typer.Option("--top", help="Show the K strongest edges.")] = 20,
    spool: Annotated[Optional[Path], typer.Option("--spool", help="Out of core: spool the observations to this "
                                                  "folder (removed on exit) and bound memory by --max-memory.")] = None,
    max_memory: Annotated[Optional[str], typer.Option("--max-memory", help="Memory bound, e.g. 4GiB: spool to "
                                                      "disk (--spool, else the temp folder) if the in-memory path "
                                                      "needs more (default: 80% of free RAM).")] = None,
    threads: ThreadsOpt = None,
    jobs: JobsOpt = 1,
    resume: ResumeOpt = None,
    scheduler: SchedulerOpt = None,
    where: Annotated[Optional[str], typer.Option("--where", help="pre | post: activations before or after the norm.")] = None,
    norm: Annotated[Optional[str], typer.Option("--norm", help="Per-channel transform: l1 | l2 | none.")] = None,
    agg: Annotated[Optional[str], typer.Option("--agg", help="Per-node reduction: sum | mean | max.")] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", help="ce (class labels) | mse (regression targets).")] = None,
    ties: Annotated[Optional[str], typer.Option(
        "--ties", help="Spearman ties: average (textbook, default) | ordinal (upstream GSNN's, row-order dependent).")] = None,
    known: Annotated[Optional[Path], typer.Option(
        "--known", help="Known function -> function edge list for --penalty (default: the model's own).")] = None,
    matrix: Annotated[Optional[str], typer.Option("--matrix", help="Save the N x N evidence matrix to OUT.npy.")] = None,
    edges_out: Annotated[Optional[str], typer.Option(
        "--edges", help="Save every edge ranked: OUT.tsv with source, target, score, rank.")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Heatmap of the evidence to FILE.png|svg|pdf.")] = None,
    spec: SpecOpt = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    data: DataOpt = None,
    batches: BatchesOpt = None,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = Device.cpu,
    exit_zero: ExitZeroOpt = False,
    trust_checkpoint: TrustOpt = False,
    trust_code: TrustCodeOpt = False,
    quiet: QuietOpt = False,
):
    """Infer function -> function edges from activation/gradient rank correlation (streamed over eval
    batches, bounded memory with --row-chunk) and score them against known edges (MRR, Hits@k, random
    baseline). Exit 1 if MRR is not above random or signals are non-finite."""
    Ctx.quiet = quiet

    def body() -> int:
        preflight(ctx)
        from .edges_api import edges as run_edges, write_edges_tsv, write_matrix
        from .subject import load

        if matrix and not matrix.endswith(".npy"):
            raise InputError("matrix file must end in .npy", source=f"--matrix {matrix}")
        if _is_sweep(more, jobs, resume, scheduler, {"--matrix": matrix, "--edges": edges_out, "--plot": plot}):
            opts = dict(spec=str(spec) if spec else None, trust=trust_checkpoint, trust_code=trust_code,
                        data=str(data) if data else None,
                        batches=batches, batch_size=batch_size, seed=seed, device=_check_device(device),
                        method=method, row_chunk=row_chunk, bootstrap=bootstrap, samples=samples, penalty=penalty,
                        scale_by_act_mean=scale_by_act_mean, truth=str(truth) if truth else None,
                        held_out=str(held_out) if held_out else None, top=top, where=where, norm=norm, agg=agg,
                        loss=loss, ties=ties, known=str(known) if known else None,
                        spool=str(spool) if spool else None, max_memory=max_memory, threads=threads)
            return run_sweep_cli(ctx, "edges", [checkpoint, *(more or [])], opts, format, output, exit_zero, jobs, resume,
                                 scheduler)
        subject = load(str(checkpoint), str(spec) if spec else None, trust=trust_checkpoint, trust_code=trust_code,
                       data=str(data) if data else None, batches=batches, batch_size=batch_size, seed=seed,
                       device=_check_device(device),
                       labels=lambda sp: "class" if (loss or sp.edges.loss) == "ce" else "regression")
        with Progress(f"edges for {checkpoint.name}") as prog:
            rep, W = run_edges(subject, method=method, row_chunk=row_chunk, bootstrap=bootstrap, samples=samples,
                               penalty=penalty, scale_by_act_mean=scale_by_act_mean,
                               truth=str(truth) if truth else None, held_out=str(held_out) if held_out else None,
                               top=top, where=where, norm=norm, agg=agg, loss=loss, seed=seed or 0, progress=prog,
                               ties=ties, known=str(known) if known else None,
                               spool=str(spool) if spool else None, max_memory=max_memory, threads=threads)
        rep = with_settings(rep, ctx)
        if matrix:
            write_matrix(W, matrix)
        if edges_out:
            write_edges_tsv(W, edges_out)
        if plot:
            from .render.plot import plot_matrix

            plot_matrix(W, rep, plot)
        n_const = rep.get("constant_columns") or {}
        c = n_const.get("n_constant_act", 0) + n_const.get("n_constant_grad", 0)
        if c and not quiet:
            err(f"fadiag: warning: {c} constant node signal column(s) ({n_const.get('n_constant_act', 0)} "
                f"activation, {n_const.get('n_constant_grad', 0)} gradient): their edges score 0")
        return finish(rep, ctx, format, output, exit_zero, label=str(checkpoint))

    run_guarded(body)


# --------------------------------------------------------------------------------------- relevance

@app.command(epilog='\x08\nExamples:\n  fadiag relevance checkpoints_example/multihead/multihead.pt --sensitivity\n  fadiag relevance learner.npz --spec learner.yaml --observation 0.1,2,...')
def relevance(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Argument(help="Multi-head learner checkpoint (.pt, or .npz of plain arrays).")],
    more: MoreOpt = None,
    sensitivity: Annotated[bool, typer.Option(
        "--sensitivity", help="Also the Jacobian tier: mean |d pred_h / d x_raw| over the eval rows.")] = False,
    observation: Annotated[Optional[str], typer.Option(
        "--observation", help="Jacobian at one point: a row index of the eval data, or comma-separated values.")] = None,
    feature_names: Annotated[Optional[str], typer.Option(
        "--feature-names", help="Comma-separated feature names (default: the spec's, else feature_i).")] = None,
    head_names: Annotated[Optional[str], typer.Option(
        "--head-names", help="Comma-separated head names (default: the spec's, else head_i).")] = None,
    step_sizes: Annotated[str, typer.Option(
        "--step-sizes", help="auto | step_sizes | log_step_sizes (IDBD, exponentiated) | adam (from the "
                             "optimizer state: lr/(sqrt(v_hat)+eps)) | step_size | none.")] = "auto",
    plot: Annotated[Optional[str], typer.Option(
        "--plot", help="Bar chart of weight relevance per head to FILE.png|svg|pdf (needs the 'plot' extra).")] = None,
    threads: ThreadsOpt = None,
    jobs: JobsOpt = 1,
    resume: ResumeOpt = None,
    scheduler: SchedulerOpt = None,
    spec: SpecOpt = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    data: DataOpt = None,
    device: DeviceOpt = Device.cpu,
    exit_zero: ExitZeroOpt = False,
    trust_checkpoint: TrustOpt = False,
    trust_code: TrustCodeOpt = False,
    quiet: QuietOpt = False,
):
    """Per-feature, per-head relevance of a multi-head online learner: path-norm weight relevance,
    step-size and trace activity, normaliser statistics, head reliance; --sensitivity adds Jacobians."""
    Ctx.quiet = quiet

    def body() -> int:
        preflight(ctx)
        from .relevance_api import relevance as run_relevance
        from .subject import load

        split = lambda s: [v.strip() for v in s.split(",")] if s else None
        if _is_sweep(more, jobs, resume, scheduler, {"--plot": plot}):
            opts = dict(spec=str(spec) if spec else None, trust=trust_checkpoint, trust_code=trust_code,
                        data=str(data) if data else None,
                        device=_check_device(device), feature_names=split(feature_names),
                        head_names=split(head_names), sensitivity=sensitivity, observation=observation,
                        step_sizes=step_sizes, threads=threads)
            return run_sweep_cli(ctx, "relevance", [checkpoint, *(more or [])], opts, format, output, exit_zero, jobs, resume,
                                 scheduler)
        need = sensitivity or (observation is not None and "," not in observation)  # a point needs no data
        subject = load(str(checkpoint), str(spec) if spec else None, trust=trust_checkpoint, trust_code=trust_code,
                       data=str(data) if data else None, device=_check_device(device), need_data=need,
                       labels="regression")
        from .sweep import apply_threads

        runtime = apply_threads(threads)
        rep = run_relevance(subject, feature_names=split(feature_names), head_names=split(head_names),
                            sensitivity=sensitivity, observation=observation, step_size_kind=step_sizes)
        rep["runtime"] = runtime
        return finish(rep, ctx, format, output, exit_zero, plot=plot, label=str(checkpoint))

    run_guarded(body)


# ----------------------------------------------------------------------------------------- inspect

@app.command(epilog='\x08\nExample:\n  fadiag inspect downloaded.pt --format table')
def inspect(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file to look into.")],
    format: FormatOpt = None,
    output: OutputOpt = None,
    exit_zero: ExitZeroOpt = False,
    trust_checkpoint: TrustOpt = False,
    quiet: QuietOpt = False,
):
    """Show what a checkpoint holds (keys, shapes, dtypes, non-finite counts, embedded spec, whether it
    needs unsafe unpickling) without building a model or running its code. Exit 1 if something needs
    attention (unsafe pickle, NaN/Inf, fp16)."""
    Ctx.quiet = quiet

    def body() -> int:
        preflight(ctx)
        from .inspect import inspect_checkpoint

        rep = inspect_checkpoint(str(checkpoint), trust=trust_checkpoint)
        return finish(rep, ctx, format, output, exit_zero)

    run_guarded(body)


# -------------------------------------------------------------------------------------------- lint

@app.command(epilog='\x08\nExample:\n  fadiag lint src/ --format github')
def lint(
    ctx: typer.Context,
    paths: Annotated[List[Path], typer.Argument(help="Python files or folders of a training code base.")],
    rule: Annotated[Optional[List[str]], typer.Option(
        "--rule", help="Only these rules (repeatable): norm-p-minus-1, cosine-eps, fp16-metrics, feedback-redraw, "
                       "self-cosine-fallback.")] = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    exit_zero: ExitZeroOpt = False,
    quiet: QuietOpt = False,
):
    """Grep training code for the published evaluation pitfalls (.norm(-1), cosine_similarity on gradients,
    fp16 metric code, redrawn feedback matrices, 1.0 fallbacks) and report file:line. Exit 1 on findings."""

    def body() -> int:
        preflight(ctx)
        from .lint import lint_paths

        rep = lint_paths([str(p) for p in paths], rule)
        emit([with_settings(rep, ctx)], default_format(format, output), output)
        return exit_code(bool(rep["findings"]), exit_zero)

    run_guarded(body)


# ------------------------------------------------------------------------------------------ report

@app.command(epilog='\x08\nExample:\n  fadiag report audit.json --format markdown > paper_form.md')
def report(
    ctx: typer.Context,
    report_file: Annotated[Path, typer.Argument(help="A JSON (or JSONL) report saved by fadiag.")],
    format: FormatOpt = None,
    output: OutputOpt = None,
    exit_zero: ExitZeroOpt = False,
    quiet: QuietOpt = False,
):
    """Re-render a saved report in another format. Exit 1 if it records a flag."""

    def body() -> int:
        preflight(ctx)
        reports = load_reports(report_file)
        emit(reports, default_format(format, output), output)
        return exit_code(any(any(f.get("flagged") for f in r.get("flags") or []) for r in reports), exit_zero)

    run_guarded(body)


@app.command(epilog='\x08\nExamples:\n  fadiag compare bp.json dfa.json\n  fadiag compare new.json --baseline main.json --max-rel-change 0.5')
def compare(
    ctx: typer.Context,
    reports: Annotated[List[Path], typer.Argument(help="Saved JSON/JSONL reports to show side by side.")],
    baseline: Annotated[Optional[Path], typer.Option(
        "--baseline", help="A saved baseline report: exit 1 if any report regressed against it.")] = None,
    max_rel_change: Annotated[Optional[float], typer.Option(
        "--max-rel-change", help="Also a regression: a flag value changing by more than this fraction.")] = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    exit_zero: ExitZeroOpt = False,
    quiet: QuietOpt = False,
):
    """Show saved reports side by side (BP against DFA, say); with --baseline, a regression gate (exit 1)."""

    def body() -> int:
        preflight(ctx)
        from .compare import compare_reports

        if max_rel_change is not None and baseline is None:
            raise InputError("only meaningful with --baseline", source="--max-rel-change")
        loaded = [r for p in reports for r in load_reports(p)]
        base = load_reports(baseline) if baseline else None
        rep = compare_reports(loaded, base, max_rel_change=max_rel_change)
        emit([with_settings(rep, ctx)], default_format(format, output), output)
        return exit_code(bool(rep["regressions"]), exit_zero)

    run_guarded(body)


def load_reports(path: Path) -> list:
    import json

    from .errors import InputError as IE

    if not path.is_file():
        raise IE("no such report file", source=str(path))
    text = path.read_text(encoding="utf-8", errors="replace")

    def no_nan(c):
        raise IE(f"report holds {c}: fadiag writes non-finite numbers as null", source=str(path))

    try:
        obj = json.loads(text, parse_constant=no_nan)
        reports = obj if isinstance(obj, list) else [obj]
    except json.JSONDecodeError:
        try:
            reports = [json.loads(line, parse_constant=no_nan) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise IE(f"not a JSON or JSONL report ({e.msg} at line {e.lineno})", source=str(path)) from None
    known = ("fadiag.audit/1", "fadiag.credit/1", "fadiag.credit/2", "fadiag.edges/1", "fadiag.relevance/1",
             "fadiag.inspect/1", "fadiag.lint/1", "fadiag.compare/1")
    if not reports or not all(isinstance(r, dict) and str(r.get("schema", "")).startswith("fadiag.") for r in reports):
        raise IE("not a fadiag report (no 'schema' key starting with 'fadiag.')", source=str(path))
    for r in reports:
        if r["schema"] not in known:
            raise IE(f"unknown report schema {r['schema']!r} (this fadiag reads {', '.join(known)})", source=str(path))
        flags = r.get("flags")
        if not isinstance(flags, list) or not all(
                isinstance(f, dict) and "id" in f and "flagged" in f and f["flagged"] in (True, False, None)
                for f in flags):
            raise IE("malformed report: 'flags' must be a list of {id, flagged, ...}", source=str(path))
        if not isinstance(r.get("verdict"), str):
            raise IE("malformed report: no 'verdict'", source=str(path))
    return reports


def with_settings(d: dict, ctx) -> dict:
    """Record where each non-default setting came from (flag, env, config) in the report."""
    from .config import sources

    d["settings"] = sources(ctx)
    origin = (ctx.find_root().obj or {}).get("config_origin") if isinstance(ctx.find_root().obj, dict) else None
    if origin:
        d["settings_config"] = origin
    return d


def _command_params() -> dict:
    import typer.main

    group = typer.main.get_command(app)
    return {name: {p.name for p in cmd.params} for name, cmd in group.commands.items()}


def _on_signal(signum, frame) -> None:
    """SIGINT/SIGTERM: remove temp files in flight and exit at once (128 + signal number).

    Exiting from the handler, instead of raising KeyboardInterrupt, means no library's broad ``except``
    can swallow the interrupt and let a half-finished run go on to write its report."""
    from .atomic import cleanup_temp_files
    from .spool import cleanup_spools

    cleanup_temp_files()
    cleanup_spools()
    try:
        sys.stderr.write("fadiag: interrupted\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: project config (fadiag.yaml / [tool.fadiag]) becomes click's default_map."""
    import signal

    from .config import build_default_map, find_config

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    try:
        raw, origin = find_config()
        default_map = build_default_map(raw, _command_params(), origin) if raw else {}
    except FadiagError as e:
        err(f"fadiag: error: {e}")
        sys.exit(e.exit_code)
    app(args=argv, default_map=default_map, prog_name="fadiag", obj={"config_origin": origin})


if __name__ == "__main__":
    main()
