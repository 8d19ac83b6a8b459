"""``--format markdown``: the per-method reporting form of REPORTING_TEMPLATE.md, filled from a report.

Audit reports fill the form section by section (fadiag.families.audit.markdown), with the template's ``## `` headings in
the template's order; what fadiag cannot know (training recipe, seeds, compute, the paper's own aggregation)
stays a marked blank ``_(fill in: ...)_``. The other families have their own forms (their package's ``markdown``);
a report of any other kind gets a generic section: title, verdict, flags table, per-layer table when the
report has ``layers``, then its other scalar fields. Several reports are separated by ``---``.

Renderers never compute: every number printed is a field of the report and every judgement (a flag, a layer
below the floor) a property of it. Non-finite numbers print as ``null``; a field the report does not carry
prints as ``n/a``. This module holds the cell and table helpers every form shares.
"""

from __future__ import annotations

import math

from ..reports.base import out_of_calibration
from .table import calibration_note, flag_cells, fmt_column, fmt_num

MISSING = "n/a"

__all__ = ["MISSING", "cell", "code", "columns", "fields_table", "fill_in", "flag_cells", "flag_id", "flags_table",
           "flags_section", "flat", "fmt_column", "generic_section", "get", "head", "num", "records_table", "render",
           "table", "verdict_line"]


def fill_in(what: str) -> str:
    return f"_(fill in: {what})_"


def num(v) -> str:
    """A number as the table view prints it; None and non-finite floats print ``null``."""
    if isinstance(v, float) and not math.isfinite(v):
        return "null"
    return fmt_num(v)


def cell(v) -> str:
    """One table cell: ``|`` escaped, line breaks folded, so a value can never break the table."""
    s = v if isinstance(v, str) else num(v)
    return " ".join(s.replace("|", "\\|").split())


def code(s) -> str:
    s = str(s)
    return f"`{s}`" if s and "`" not in s and "\n" not in s else s


def table(headers: list, rows: list) -> str:
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def status(flagged, outside: bool = False) -> str:
    if outside:
        return "out of calibration"
    if flagged is None:
        return "skipped"
    return "**FLAG**" if flagged else "ok"


def flag_id(f) -> str:
    """The protocol's letters as the paper writes them, "(a)"; named checks as they are."""
    return f"({f.id})" if len(f.id) == 1 else f.id


def flags_table(flags) -> str:
    """Value and threshold columns formatted as the table view does (flag_cells: one format per column)."""
    return table(["id", "diagnostic", "value", "threshold", "status", "detail"],
                 [[flag_id(f), f.name or "", v, t, status(f.flagged, out_of_calibration(f)),
                  (f.detail or "") + calibration_note(f)]
                  for f, (v, t) in zip(flags, flag_cells(flags))])


def verdict_line(r) -> str:
    return f"**{r.verdict}**"


def get(d: dict, key: str):
    return num(d[key]) if key in d else MISSING


# ------------------------------------------------------------------------------------------- generic

def _scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def flat(v) -> str:
    """Any value as the text of one cell, never a Python repr: lists comma-separated, dicts as
    ``key value`` pairs separated by ``;``."""
    if _scalar(v):
        return num(v)
    if isinstance(v, dict):
        return "; ".join(f"{k} {flat(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ("; " if any(isinstance(x, (dict, list, tuple)) for x in v) else ", ").join(flat(x) for x in v)
    return str(v)


def columns(rows: list, cols: list) -> list:
    """Cells of ``rows`` (dicts) for ``cols``, every column of numbers formatted one way (fmt_column)."""
    cells = []
    for c in cols:
        vals = [row.get(c) if c in row else MISSING for row in rows]
        if all(v is None or v == MISSING or (isinstance(v, (int, float)) and not isinstance(v, bool))
               for v in vals):
            f = iter(fmt_column([v for v in vals if v != MISSING]))
            cells.append([MISSING if v == MISSING else next(f) for v in vals])
        else:
            cells.append([flat(v) for v in vals])
    return [list(r) for r in zip(*cells)] if cells else []


def records_table(rows: list, cols: list | None = None, headers: list | None = None) -> str:
    """A list of dicts as one table: a column per key (the union, in first-seen order)."""
    if cols is None:
        cols = []
        for row in rows:
            cols += [k for k in row if k not in cols]
    return table(headers or cols, columns(rows, cols))


def _identification_generic(r) -> str | None:
    ck = r.checkpoint
    if not isinstance(ck, dict) or not ck:
        return None
    rows = [[k, code(v) if k in ("path", "sha256") and v else num(v)] for k, v in ck.items() if _scalar(v)]
    return "## Checkpoint\n\n" + table(["field", "value"], rows)


def _layers_table(layers: list) -> str:
    cols = []
    for row in layers:
        for k, v in row.items():
            if k not in cols and _scalar(v):
                cols.append(k)
    if "layer" in cols:
        cols.remove("layer")
        cols.insert(0, "layer")
    return "## Per-layer values\n\n" + records_table(layers, cols)


_SKIP = {"schema", "verdict", "flags", "checkpoint", "layers"}


def _structured(k: str, v) -> str | None:
    """A list of records or a dict of records as its own section; None for anything flatter."""
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return f"## {k}\n\n" + records_table(v)
    if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
        rows = [{"name": kk, **{ik: iv for ik, iv in vv.items()}} for kk, vv in v.items()]
        return f"## {k}\n\n" + records_table(rows)
    return None


def fields_table(r, skip=()) -> list:
    """The report's other fields (its JSON keys, in order): records as their own tables, the rest as
    ``field | value`` rows."""
    rows, sections = [], []
    for k, v in r.to_dict().items():
        if k in _SKIP or k in skip:
            continue
        sec = _structured(k, v)
        if sec:
            sections.append(sec)
        elif isinstance(v, dict) and v:
            for kk, vv in v.items():
                sub = _structured(f"{k}.{kk}", vv)
                sections.append(sub) if sub else rows.append([f"{k}.{kk}", flat(vv)])
        else:
            rows.append([k, flat(v)])
    return (["## Other fields\n\n" + table(["field", "value"], rows)] if rows else []) + sections


def head(r) -> list:
    """Title, schema and verdict, and the checkpoint's identification: the opening of every non-audit form."""
    ck = r.checkpoint if isinstance(r.checkpoint, dict) else {}
    subject = getattr(r, "method_name", None) or ck.get("path") or ""
    title = f"# fadiag {r.family}" + (f": {subject}" if subject else "")
    parts = [title, f"Schema: `{r.schema}`. Verdict: {verdict_line(r)}"]
    ident = _identification_generic(r)
    return parts + ([ident] if ident else [])


def flags_section(r) -> list:
    return ["## Flags\n\n" + flags_table(r.flags)] if r.flags else []


def generic_section(r) -> str:
    parts = head(r) + flags_section(r)
    layers = getattr(r, "layers", None)
    if isinstance(layers, list) and layers and all(isinstance(x, dict) for x in layers):
        parts.append(_layers_table(layers))
    parts += fields_table(r)
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ dispatch

def form_of(r):
    """The form that renders ``r``: its family's (fadiag.registry, the "markdown" form; the family modules
    import the helpers above), else the generic section."""
    from ..registry import form

    return form(r.family, "markdown") or generic_section


def render(reports: list, **_) -> str:
    return "\n---\n\n".join(form_of(r)(r) for r in reports)
