"""``--format github``: GitHub Actions workflow commands, for ``fadiag audit ... --format github`` in a job.

For each report: one ``::error file=<ckpt path>,title=fadiag (<id>) <name>::<detail>`` per flagged
diagnostic and one ``::notice ...`` per skipped one (flagged null), then a plain summary line
``fadiag: <path>: <verdict>``. Escaping follows the Actions runner (actions/toolkit ``command.ts``):
message data escapes ``%`` ``\\r`` ``\\n``; property values additionally ``:`` and ``,``.

Side effect, the only one any renderer has: when the environment variable ``GITHUB_STEP_SUMMARY``
names a file (Actions sets it in every step), ``render`` appends the markdown form of the reports to it
(``append_step_summary``), so the job summary page shows the filled reporting form. Appending, never
overwriting: several fadiag steps in one job each add their own summary.
"""

from __future__ import annotations

import os

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


def lines(r: dict) -> list:
    path = (r.get("checkpoint") or {}).get("path")
    out = []
    for f in r.get("flags") or []:
        title = f"fadiag ({f.get('id', '?')}) {f.get('name') or ''}".strip()
        detail = f.get("detail") or f.get("name") or ""
        if f.get("flagged") is None:
            out.append(command("notice", detail, file=path, title=title + " (skipped)"))
        elif f.get("flagged"):
            out.append(command("error", detail, file=path, title=title))
    # Reports with source-code findings (fadiag lint): one annotation per finding, at its file and line.
    for x in r.get("findings") or []:
        out.append(command("warning", f"[{x.get('rule')}] {x.get('message')}", file=x.get("file"),
                           line=x.get("line"), col=x.get("col"), title=f"fadiag lint {x.get('rule')}"))
    subject = path or r.get("method_name") or r.get("schema") or "report"
    out.append(f"fadiag: {_one_line(subject)}: {_one_line(r.get('verdict') or 'no verdict')}")
    return out


def append_step_summary(reports: list) -> str | None:
    """Append the markdown form of ``reports`` to ``$GITHUB_STEP_SUMMARY`` when it is set.

    Returns the path written, or None when the variable is unset or empty. An unwritable path is bad
    input (exit 2), not a silent loss of the summary.
    """
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return None
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(render_markdown(reports) + "\n")
    except OSError as e:
        # The annotations and the exit code matter more than the summary page: warn, do not fail the run.
        import sys

        sys.stderr.write(f"fadiag: warning: GITHUB_STEP_SUMMARY={path}: cannot append the job summary "
                         f"({e.strerror or e})\n")
        return None
    return path


def render(reports: list, **_) -> str:
    text = "".join(line + "\n" for r in reports for line in lines(r))
    append_step_summary(reports)
    return text
