"""``--format table``: rich tables for people (the default on a terminal).

Dispatches on each report's ``schema``; families other than audit register their table function in
``TABLES``. Numbers are formatted here, never computed.
"""

from __future__ import annotations

import ast
import io
import math
import re

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..reports.base import out_of_calibration


def fmt_num(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_column(values: list, digits: int = 4, *, counts: bool = False) -> list:
    """Format numbers that are read together (a table column, a value beside its threshold) ONE way.

    Scientific notation (digits - 1 decimals) for all when any non-zero magnitude is >= 1e4 or < 1e-3, or
    they span more than 1e3; otherwise fixed decimals, enough to show ``digits`` significant digits of the
    smallest. Python ints stay ints; with ``counts`` so do integral floats (flag values that count things).
    Non-numbers print as fmt_num does (``null``, ``true``, text)."""
    nums = [v for v in values if _is_num(v)]
    if all(isinstance(v, int) or (counts and float(v).is_integer() and abs(v) < 1e9) for v in nums):
        return [str(int(v)) if _is_num(v) else fmt_num(v) for v in values]
    nz = [abs(v) for v in nums if v != 0]
    if nz and (max(nz) >= 1e4 or min(nz) < 1e-3 or max(nz) / min(nz) > 1e3):
        fmt = f".{digits - 1}e"
    else:
        fmt = f".{min(6, max(0, digits - 1 - math.floor(math.log10(min(nz))))) if nz else 0}f"
    return [format(float(v), fmt) if _is_num(v) else fmt_num(v) for v in values]


def fmt_acc(v) -> str:
    """An accuracy (a fraction): always 4 decimals, so 0.5020 never prints as 0.502."""
    return f"{v:.4f}" if _is_num(v) else "none"


_DICT_REPR = re.compile(r"\{('[^'{}]*': [^{}]*)\}")


def plain(s) -> str:
    """Text for people: a Python dict repr inside a string (a recipe) becomes ``key value, key value``."""
    def sub(m):
        try:
            d = ast.literal_eval("{" + m.group(1) + "}")
        except (ValueError, SyntaxError):
            return m.group(0)
        return ", ".join(f"{k} {v}" for k, v in d.items())

    return _DICT_REPR.sub(sub, "" if s is None else str(s))


def entry_value(x: dict) -> str:
    """inspect's ``other_entries`` value: a str entry is shown as its text, not its repr."""
    v = str(x.get("value", ""))
    if x.get("type") == "str" and len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    return v


def flag_text(flagged, outside: bool = False) -> Text:
    """A flag's status; ``outside``: a threshold crossed outside its calibration (fadiag.calibration)."""
    if outside:
        return Text("out of calibration", style="yellow")
    if flagged is None:
        return Text("skipped", style="dim")
    return Text("FLAG", style="bold red") if flagged else Text("ok", style="green")


def calibration_note(fl) -> str:
    """" (outside its calibration: why)" for a flag judged outside its calibration's domain; "" otherwise."""
    c = fl.calibration
    return f" (outside its calibration: {c.get('why')})" if isinstance(c, dict) and c.get("inside") is False else ""


def verdict_text(r) -> Text:
    """The verdict in red when any flag is raised, green otherwise (decided by the flags, not the wording)."""
    return Text(r.verdict, style="bold red" if r.flagged else "bold green")


#: Flags whose value counts dead blocks and whose threshold is the number of blocks: flagged when all are dead.
_ALL_OF = ("f", "dead_blocks")


def _count_row(fl) -> bool:
    """A flag that counts things (findings, NaNs, layers): value and threshold are whole numbers."""
    v, t = fl.value, fl.threshold
    return _is_num(v) and float(v).is_integer() and (t is None or (_is_num(t) and float(t).is_integer()))


def flag_cells(flags) -> list:
    """(value, threshold) text per Flag. Measured values share one format per column, and so do their
    thresholds (fmt_column); counts print as whole numbers, and (f) as "0 dead" of "all 6" blocks."""
    flags = list(flags)
    meas = [fl for fl in flags if not _count_row(fl)]
    vals = dict(zip(map(id, meas), fmt_column([fl.value for fl in meas])))
    ths = dict(zip(map(id, meas), fmt_column([fl.threshold for fl in meas])))
    out = []
    for fl in flags:
        v, t = fl.value, fl.threshold
        if fl.id in _ALL_OF and _count_row(fl):
            out.append((f"{int(v)} dead", f"all {int(t)}"))
        elif _count_row(fl):
            out.append((str(int(v)), "" if t is None else str(int(t))))
        else:
            out.append((vals[id(fl)], ths[id(fl)] if t is not None else ""))
    return out


def table(title: str | None = None, **kw) -> Table:
    """A rich table that narrows to the console, title on the left (keep it short: it wraps at the
    table's own width; put long headings in a Text before the table)."""
    return Table(title=title, title_justify="left", **kw)


def add_columns(t: Table, cols) -> None:
    """cols: (header, kind) with kind "num" (right, never wrapped), "key" (left, never wrapped) or "text"
    (wrapped at words, long words folded)."""
    for head, kind in cols:
        if kind == "num":
            t.add_column(head, justify="right", no_wrap=True)
        elif kind == "key":
            t.add_column(head, no_wrap=True)
        else:
            t.add_column(head, overflow="fold")


#: What a passing check found, for the checks whose name states the failure ("deep blocks fail to beat ...").
PASSED = {
    "residual stream exploded": "residual stream within bounds",
    "BP grad at numerical floor": "BP grad above the numerical floor",
    "BP grad direction is drift-dominated": "BP grad direction not drift-dominated",
    "deep blocks fail to beat frozen-random baseline": "deep blocks beat the frozen-random baseline",
    "non-finite values in the forward/backward pass": "no non-finite values in the forward/backward pass",
    "residual blocks contribute nothing": "residual blocks contribute",
}


def outcome(fl) -> str:
    """The check's outcome in words: the finding when flagged, what passed when not, "not checked" when skipped."""
    if fl.flagged is None:
        return "not checked"
    if fl.flagged or out_of_calibration(fl):
        return fl.name
    return PASSED.get(fl.name, f"not found: {fl.name}")


def checks_table(r, title: str = "checks", ids=None) -> Table:
    """The flags of any report: id, status, value, threshold, then the check's outcome and its detail."""
    f = table(title)
    add_columns(f, (("id", "text"), ("status", "key"), ("value", "num"), ("threshold", "num"),
                    ("outcome: detail", "text")))
    for fl, (v, t) in zip(r.flags, flag_cells(r.flags)):
        detail = fl.detail[len("skipped: "):] if fl.flagged is None and fl.detail.startswith("skipped: ") else fl.detail
        what = Text.assemble(outcome(fl), (f": {detail}" if detail else "", "dim"),
                             (calibration_note(fl), "yellow"))
        f.add_row(ids(fl.id) if ids else fl.id, flag_text(fl.flagged, out_of_calibration(fl)), v, t, what)
    return f


def verdict_row(r, more: str = "") -> Text:
    """"verdict: <the verdict>", the closing line of every table view."""
    return Text.assemble(("verdict: ", "bold"), verdict_text(r), more)


#: schema -> table function, for a form registered by hand; every family's comes from its record
#: (fadiag.registry, its "table" form).
TABLES: dict = {}


def register(schema: str, fn) -> None:
    TABLES[schema] = fn


def _table_of(r):
    from ..registry import form

    return TABLES.get(r.schema) or form(r.family, "table")


def render(reports: list, *, color: bool = False, width: int | None = None, **_) -> str:
    """width None: rich's own detection (the terminal's width, $COLUMNS if set, else 80)."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=color, color_system="standard" if color else None,
                      no_color=not color, highlight=False)
    for i, r in enumerate(reports):
        fn = _table_of(r)
        if fn is None:
            console.print(f"(no table view for schema {r.schema!r}; use --format json)")
            continue
        if i:
            console.print()
        for part in fn(r):
            console.print(part)
    return buf.getvalue()
