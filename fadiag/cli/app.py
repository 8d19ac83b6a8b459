"""The Typer app and everything around the commands: one-line usage errors, the per-invocation state in click's
context object, the guard that turns every error into an exit code, signal handling and the console entry point.

Exit codes (fadiag/errors.py): 0 nothing flagged, 1 something flagged, 2 bad usage or input, 3 internal error,
130 (or 128 + the signal) interrupted.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Callable, List, Optional

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_INTERNAL, FadiagError
from ..text import err
from .options import SHARED, polish_help


@dataclass
class State:
    """Per-invocation switches every command shares, kept in click's context object (``ctx.obj``)."""

    debug: bool = False
    quiet: bool = False
    #: where the project config came from (fadiag.yaml, pyproject.toml:[tool.fadiag]), recorded in reports
    config_origin: Optional[str] = None


def state(ctx) -> State:
    """This invocation's State, made on first use (the root context's obj may still be main()'s plain dict)."""
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        origin = root.obj.get("config_origin") if isinstance(root.obj, dict) else None
        root.obj = State(quiet=bool(ctx.params.get("quiet")), config_origin=origin)
    if ctx.obj is not root.obj:
        ctx.obj = root.obj
    return root.obj


class OneLineErrors(TyperGroup):
    """Usage errors (a bad flag, a missing argument, a value out of range) as ONE line on stderr, exit 2,
    like every other bad input: click's own multi-line usage block would break the stderr contract."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        polish_help(self.commands)

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


def version_cb(value: bool):
    if value:
        typer.echo(f"fadiag {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_cb(
    ctx: typer.Context,
    version: Annotated[Optional[bool], typer.Option("--version", callback=version_cb, is_eager=True,
                                                     help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for internal errors.")] = False,
):
    state(ctx).debug = debug


def command(order: str, **kw):
    """Register the decorated function as a command of ``app``. Its parameters are ``ctx`` and then those named
    in ``order``, in that order (the --help order): its own, and the shared ones (options.SHARED), which reach
    it in ``**shared``. It runs under ``run_guarded``; its return value is the exit code."""

    def register(fn):
        own = inspect.signature(fn, eval_str=True).parameters
        names = order.split()
        stray = set(own) - {"ctx", "shared", *names}
        if stray:  # a programming error: say which, at import
            raise TypeError(f"{fn.__name__}: parameters missing from its order: {', '.join(sorted(stray))}")
        params = [own["ctx"]] + [own[n].replace(kind=inspect.Parameter.KEYWORD_ONLY) if n in own else SHARED[n]
                                 for n in names]

        @functools.wraps(fn)
        def run(ctx, **values):
            run_guarded(ctx, lambda: fn(ctx, **values))

        run.__signature__ = inspect.Signature(params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        return app.command(**kw)(run)

    return register


def run_guarded(ctx, body: Callable[[], int]) -> None:
    """Run a command: take its --quiet, check its files (``preflight``), run ``body`` and exit with its code;
    a FadiagError becomes its exit code with one line on stderr, never a traceback."""
    from ..config import check_trust_env
    from .paths import preflight

    st = state(ctx)
    st.quiet = bool(ctx.params.get("quiet"))
    try:
        check_trust_env()
        preflight(ctx)
        code = body()
    except FadiagError as e:
        _fail(st, f"fadiag: error: {e}", e.exit_code, e)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail(st, "fadiag: interrupted", 130)
    except MemoryError:
        _fail(st, "fadiag: error: out of memory; lower --batches/--batch-size/--row-chunk", EXIT_BAD_INPUT)
    except Exception as e:  # a bug: short message, exit 3
        _fail(st, f"fadiag: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
                  "(rerun as 'fadiag --debug COMMAND ...' for the traceback)", EXIT_INTERNAL, e)
    raise typer.Exit(code)


def _fail(st: State, line: str, code: int, exc: Optional[BaseException] = None):
    err(line)
    if exc is not None and st.debug:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    raise typer.Exit(code)


def _command_params() -> dict:
    import typer.main

    group = typer.main.get_command(app)
    return {name: {p.name for p in cmd.params} for name, cmd in group.commands.items()}


def _on_signal(signum, frame) -> None:
    """SIGINT/SIGTERM: remove temp files in flight and exit at once (128 + signal number).

    Exiting from the handler, instead of raising KeyboardInterrupt, means no library's broad ``except``
    can swallow the interrupt and let a half-finished run go on to write its report."""
    from ..run.atomic import cleanup_temp_files
    from ..run.spool import cleanup_spools

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

    from ..config import build_default_map, find_config

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    try:
        raw, origin = find_config()
        default_map = build_default_map(raw, _command_params(), origin) if raw else {}
    except FadiagError as e:
        err(f"fadiag: error: {e}")
        sys.exit(e.exit_code)
    app(args=argv, default_map=default_map, prog_name="fadiag", obj={"config_origin": origin})
