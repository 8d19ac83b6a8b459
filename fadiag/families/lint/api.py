"""``fadiag lint PATH``: grep a training code base for the evaluation pitfalls of docs/science.md §2.

Rules (each names the CHECKLIST.md item it enforces):

- ``norm-p-minus-1`` (pitfall 1): ``.norm(-1)`` / ``.norm(p=-1)`` / ``torch.norm(x, -1)`` is the p = -1
  "norm" of the whole tensor, not the per-row L2 norm (``.norm(dim=-1)``).
- ``cosine-eps`` (pitfall 2): ``cosine_similarity`` on a line that mentions gradients, or with an argument
  named like one (``g``, ``g_bp``, ``bp_grad``, ``x_g``): its divisor is clamped at eps = 1e-8, so with
  ‖g‖ ≈ 1e-10 the cosine shrinks ~100×. Compute it by hand in float64.
- ``fp16-metrics`` (pitfall 3): ``autocast(... float16 ...)``, ``.half()`` or ``dtype=torch.float16``:
  fp16 flushes BP gradients of ~5e-10 to zero. Keep metric code in float32/64 (bf16 keeps the range).
- ``feedback-redraw`` (pitfall 4): a feedback matrix (``feedback…``, ``B``, ``B_l``, ``B[l]``, ``fb_mat``)
  drawn with ``torch.randn``/``rand``/``normal``: Γ with fresh B_l is meaningless; load the training-time
  matrices (a draw at training initialisation is fine, and is worth a look anyway).
- ``self-cosine-fallback`` (pitfall 6.5): a cosine/alignment defaulting to 1.0 (``cos = 1.0``, or any
  ``... else 1.0`` on a line naming cos/gamma/alignment): missing inputs must give N/A, not a value.

Comments and strings are skipped (tokenize); files that fail to tokenize are scanned line by line.
Report schema "fadiag.lint/2" (docs/json.md); findings carry file, line, col, rule, message and the source line.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from ... import __version__
from ...errors import InputError
from ...reports import Flag
from .report import LintReport

RULES = {
    "norm-p-minus-1": ("pitfall 1", re.compile(r"\.norm\(\s*(?:p\s*=\s*)?-1\s*[,)]|torch\.norm\([^,()]+,\s*(?:p\s*=\s*)?-1\s*[,)]"),
                       "`.norm(-1)` is the p=-1 norm of the whole tensor; use `.norm(dim=-1)` for per-row L2 norms"),
    "cosine-eps": ("pitfall 2", re.compile(r"cosine_similarity\(.*grad|grad.*cosine_similarity\(|cosine_similarity\("
                                           r"[^()]*\b(?:g|g_\w+|\w+_g|bp_\w*|\w+_bp)\b"),
                   "cosine_similarity clamps its divisor at eps=1e-8: with tiny gradients it shrinks the cosine "
                   "~100x; compute a.g/(|a||g|) by hand in float64 and report the norms"),
    "fp16-metrics": ("pitfall 3", re.compile(r"autocast\([^)]*(?<!b)float16|\.half\(\)|dtype\s*=\s*torch\.float16"),
                     "fp16 underflows BP gradients of ~5e-10 to zero/NaN; compute metrics in float32/64 (bf16 keeps the range)"),
    "feedback-redraw": ("pitfall 4", re.compile(r"(?:feedback\w*|\bB(?:_\w+)?(?:\[[^\]]*\])?|fb_?mat\w*)\s*=\s*"
                                                r"torch\.(?:randn|rand|normal)\("),
                        "feedback matrices redrawn: Γ with fresh B_l is meaningless; load the training-time matrices"),
    "self-cosine-fallback": ("pitfall 6.5", re.compile(r"(?i)(?:cos|gamma|align)\w*\s*=\s*1\.0\b|"
                                                       r"(?=.*(?:cos|gamma|align)).*\belse\s+1(?:\.0*)?(?![\w.])"),
                             "a cosine that falls back to 1.0 when inputs are missing reports a self-cosine; give N/A"),
}
MAX_FILES = 20000
MAX_FILE_BYTES = 5 * 1024 * 1024


def _code_only(text: str) -> list:
    """Source lines with comments and string literals blanked (so rules never fire on prose)."""
    lines = text.splitlines()
    out = [list(l) for l in lines]
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.COMMENT, tokenize.STRING):
                (r0, c0), (r1, c1) = tok.start, tok.end
                for r in range(r0, r1 + 1):
                    if r - 1 >= len(out):
                        break
                    row = out[r - 1]
                    a = c0 if r == r0 else 0
                    b = c1 if r == r1 else len(row)
                    for i in range(a, min(b, len(row))):
                        row[i] = " "
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return [re.sub(r"#.*", "", l) for l in lines]
    return ["".join(r) for r in out]


def _files(paths: list) -> list:
    files = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise InputError("no such file or folder", source=str(p))
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
        if len(files) > MAX_FILES:
            raise InputError(f"more than {MAX_FILES} Python files; point lint at a smaller tree", source=str(p))
    return files


def _findings(f: Path, chosen: list) -> list:
    if f.stat().st_size > MAX_FILE_BYTES:
        return []
    text = f.read_text(encoding="utf-8", errors="replace")
    raw = text.splitlines()
    out = []
    for i, line in enumerate(_code_only(text), start=1):
        for rule in chosen:
            pit, rx, msg = RULES[rule]
            m = rx.search(line)
            if m:
                out.append({"file": str(f), "line": i, "col": m.start() + 1, "rule": rule, "pitfall": pit,
                            "message": msg, "text": raw[i - 1].strip()[:200]})
    return out


def lint_paths(paths: list, rules: list | None = None) -> LintReport:
    chosen = rules or list(RULES)
    for r in chosen:
        if r not in RULES:
            raise InputError(f"unknown rule {r!r} (rules: {', '.join(RULES)})", source="--rule")
    files = _files(paths)
    findings = [x for f in files for x in _findings(f, chosen)]
    flags = []
    for rule in chosen:
        n = sum(x["rule"] == rule for x in findings)
        flags.append(Flag(rule, f"{RULES[rule][0]}: {rule}", n > 0, float(n), 0.0, f"{n} finding(s)"))
    return LintReport(fadiag_version=__version__, paths=[str(p) for p in paths], n_files=len(files), rules=chosen,
                      findings=findings, flags=tuple(flags))
