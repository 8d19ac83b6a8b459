"""Printing names that come from files: control characters escaped, so a file name cannot drive the terminal.

A checkpoint called ``x\\x1b[2K\\x1b[1Gfadiag: m.pt: trustworthy.pt`` would otherwise erase the real
refusal line and print a fake pass. Every stderr line (``err``) and every rendered report (``fadiag.cli.output``)
goes through here: C0/C1 control characters, DEL and the Unicode bidirectional overrides become visible
``\\xNN`` / ``\\uNNNN`` escapes. JSON output keeps the exact strings (JSON escapes them losslessly).
"""

from __future__ import annotations

import re

# C0 (newline and tab too: a name never needs them), DEL, C1, and the bidi
# embedding/override/isolate controls and marks that can reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# The same set minus C0: JSON already writes C0 as \\u00NN escapes.
_JSON_RAW = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _esc(m: re.Match) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape_controls(s: str) -> str:
    """``s`` with every control character written as a visible escape (``\\x1b``, ``\\u202e``)."""
    return _CONTROL.sub(_esc, str(s))


def escape_json_text(text: str) -> str:
    """Rendered JSON text with DEL, C1 and bidi controls written as ``\\uNNNN``: the same JSON value, but
    nothing a terminal acts on. (Those characters only occur inside JSON strings, where the escape is valid.)"""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def sanitize(obj, *, markup: bool = False):
    """A copy of a report (dicts, lists, strings) with control characters escaped in every string, keys
    included; ``markup=True`` also escapes rich markup (``[bold]``) for the table view."""
    if isinstance(obj, str):
        s = escape_controls(obj)
        if markup and "[" in s:
            from rich.markup import escape

            s = escape(s)
        return s
    if isinstance(obj, dict):
        return {sanitize(k, markup=markup) if isinstance(k, str) else k: sanitize(v, markup=markup)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v, markup=markup) for v in obj]
    return obj


def err(msg: str) -> None:
    """One line to stderr, control characters escaped (names from files cannot drive the terminal)."""
    import sys

    sys.stderr.write(escape_controls(str(msg).rstrip("\n")) + "\n")
