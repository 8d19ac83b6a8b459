"""The one output path of every command (``finish``): typed reports in, the report on stdout or --output,
the GitHub step summary, the one-line verdicts on stderr, the exit code out. And the progress bars.

stdout carries the report only (machine-readable formats stay clean for ``jq``); progress, warnings and
human summaries go to stderr. Strings that come from files are escaped before a terminal sees them
(fadiag/text.py); JSON escapes them itself, losslessly.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from ..errors import EXIT_FLAGGED, EXIT_OK
from ..render import Format
from ..text import err
from .app import state


def default_format(fmt: Optional[Format], output: Optional[str] = None) -> Format:
    """table on a terminal, json when piped or written with --output."""
    if fmt is not None:
        return fmt
    return Format.table if (sys.stdout.isatty() and not output) else Format.json


def with_settings(rep, ctx):
    """``rep`` recording where each non-default setting came from (flag, env, config), and the config file.
    Where a sweep ran (--jobs, --resume, --scheduler) is left out: it cannot change a number."""
    from ..config import sources
    from ..run.sweep import BACKEND_OPTIONS

    settings = {k: v for k, v in sources(ctx).items() if k not in BACKEND_OPTIONS}
    return rep.replace(settings=settings, settings_config=state(ctx).config_origin or rep.settings_config)


def finish(ctx, reports: Sequence, *, plot: Optional[str] = None, labels: Optional[Sequence[str]] = None,
           saved: bool = False, streamed: bool = False) -> int:
    """The end of every command: record the settings in each report (not in ``saved`` ones, re-rendered as
    they are), draw --plot, render the reports in the command's --format to stdout/--output (unless
    ``streamed`` already did), say each verdict on stderr under its label, and return the exit code of their
    flags (0 with --exit-zero)."""
    p = ctx.params
    reports = [r if saved else with_settings(r, ctx) for r in reports]
    if plot:
        from ..render.plot import plot_reports

        plot_reports(reports, plot)
    fmt, output, quiet = default_format(p.get("format"), p.get("output")), p.get("output"), state(ctx).quiet
    if not streamed:
        emit(reports, fmt, output, quiet=quiet)
    if labels and not quiet and not (fmt == Format.table and not output and sys.stdout.isatty()):
        # AFTER the report; not when the table itself just went to the terminal: it ends on the same verdict
        for label, r in zip(labels, reports):
            err(f"fadiag: {label}: {r.verdict}")
    return EXIT_FLAGGED if any(r.flagged for r in reports) and not p.get("exit_zero") else EXIT_OK


def emit(reports: Sequence, fmt: Format, output: Optional[str], *, quiet: bool = False) -> None:
    """Render typed reports in ``fmt`` and write them to ``output`` (atomically) or stdout; with --format
    github, append the job summary to $GITHUB_STEP_SUMMARY."""
    from ..text import escape_json_text

    if fmt not in (Format.json, Format.jsonl):  # JSON escapes strings itself, losslessly (escape_json_text)
        reports = [_sanitized(r, markup=fmt == Format.table) for r in reports]
    color = output is None and fmt == Format.table and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    text = _render(reports, fmt, color)  # table width: rich's own detection (terminal, $COLUMNS, 80)
    if fmt in (Format.json, Format.jsonl):
        text = escape_json_text(text)
    if output:
        from .paths import write_atomic

        write_atomic(output, text)
        if not quiet:
            err(f"fadiag: wrote {fmt.value} report to {output}")
    else:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head` closed the pipe: the reader has what it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
    if fmt == Format.github:
        append_step_summary(reports)


def _sanitized(rep, *, markup: bool):
    """``rep`` with control characters (and, for the table, rich markup) escaped in every string."""
    from ..reports import from_dict
    from ..text import sanitize

    return from_dict(sanitize(rep.to_dict(), markup=markup))


def _render(reports: list, fmt: Format, color: bool) -> str:
    from ..render import render

    return render(reports, fmt, color=color)


def append_step_summary(reports: list) -> Optional[str]:
    """Append the job summary (markdown) of ``reports`` to ``$GITHUB_STEP_SUMMARY`` when it is set, in one
    write (several fadiag steps in one job each add theirs). Returns the path written, else None. An
    unwritable path is a warning: the annotations and the exit code matter more than the summary page."""
    from ..render import github

    path = os.environ.get("GITHUB_STEP_SUMMARY")
    text = github.step_summary_markdown(reports) if path else None
    if not text:
        return None
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
    except OSError as e:
        err(f"fadiag: warning: GITHUB_STEP_SUMMARY={path}: cannot append the job summary ({e.strerror or e})")
        return None
    return path


class Progress:
    """A rich progress bar on stderr when stderr is a terminal and not ``quiet``; silent otherwise. It shows
    from the moment it is entered (a spinner and the elapsed time, before the first step is counted), so
    loading and the first forward pass are never a silent wait."""

    def __init__(self, label: str, quiet: bool = False):
        self.label, self.bar, self.task = label, None, None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, SpinnerColumn, TimeElapsedColumn

            self.bar = RP(SpinnerColumn(), "[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    def __enter__(self):
        if self.bar:
            self.bar.start()
            from ..text import sanitize

            self.task = self.bar.add_task(sanitize(self.label, markup=True), total=None)
        return self

    def __call__(self, done: int, total: int, label: str | None = None) -> None:
        if not self.bar:
            return
        from ..text import sanitize

        desc = sanitize(label or self.label, markup=True)
        self.bar.update(self.task, completed=done, total=total, description=desc)

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()


def progress_for(ctx):
    """label -> Progress, quiet as this invocation is (what fadiag.run.sweep takes as ``progress``)."""
    quiet = state(ctx).quiet
    return lambda label: Progress(label, quiet)
