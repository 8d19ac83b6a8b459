"""``--format github``: GitHub Actions workflow commands, for ``fadiag audit ... --format github`` in a job.

For each report: one ``::error file=<ckpt path>,title=fadiag (<id>) <name>::<detail>`` per flagged
diagnostic and one ``::notice ...`` per skipped one (flagged null), then a plain summary line
``fadiag: <path>: <verdict>``. Escaping follows the Actions runner (actions/toolkit ``command.ts``):
message data escapes ``%`` ``\\r`` ``\\n``; property values additionally ``:`` and ``,``.

The job summary page: ``step_summary_markdown(reports)`` is the text to append to the file that
``$GITHUB_STEP_SUMMARY`` names (the markdown form of the reports, the filled reporting form). Rendering has
no side effect; the CLI appends it (appending, never overwriting: several fadiag steps in one job each add
their own summary): ``fadiag.cli.output.append_step_summary``.
"""

from __future__ import annotations

from ..reports.base import out_of_calibration
from .markdown import render as render_markdown


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **props) -> str:
    p = ",".join(f"{k}={escape_property(str(v))}" for k, v in props.items() if v)
    return f"::{kind}{' ' + p if p else ''}::{escape_data(message)}"


def _one_line(s) -> str:
    return " ".join(str(s).split())


def lines(r) -> list:
    path = (r.checkpoint if isinstance(r.checkpoint, dict) else {}).get("path")
    out = []
    for f in r.flags:
        title = f"fadiag ({f.id}) {f.name or ''}".strip()
        detail = f.detail or f.name or ""
        if f.flagged is None:
            out.append(command("notice", detail, file=path, title=title + " (skipped)"))
        elif f.flagged:
            out.append(command("error", detail, file=path, title=title))
        elif out_of_calibration(f):
            out.append(command("warning", detail, file=path, title=title + " (out of calibration)"))
    # Reports with source-code findings (fadiag lint): one annotation per finding, at its file and line.
    for x in getattr(r, "findings", None) or []:
        out.append(command("warning", f"[{x.get('rule')}] {x.get('message')}", file=x.get("file"),
                           line=x.get("line"), col=x.get("col"), title=f"fadiag lint {x.get('rule')}"))
    subject = path or getattr(r, "method_name", None) or r.schema
    out.append(f"fadiag: {_one_line(subject)}: {_one_line(r.verdict)}")
    return out


def step_summary_markdown(reports: list) -> str | None:
    """What to append to ``$GITHUB_STEP_SUMMARY`` for these reports (their markdown form and a newline);
    None when there is nothing to summarise. Pure: reads no environment, writes no file."""
    from . import as_report

    if not reports:
        return None
    return render_markdown([as_report(r) for r in reports]) + "\n"


def render(reports: list, **_) -> str:
    return "".join(line + "\n" for r in reports for line in lines(r))
