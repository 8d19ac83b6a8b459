"""Every command run once on the shipped examples, in-process, as JSON report dicts (cached per process).

Shared by tests/docs/test_science_doc.py (every JSON key is documented), tests/kernel/test_width.py (every table
fits 80 columns) and tests/kernel/test_render_markdown_tables.py (every markdown table parses). The runs go
through the CLI (``--format json``), so the dicts are exactly what a user's JSON file holds.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: A tiny training script with one instance of every lint rule, so the lint report has findings.
LINT_SAMPLE = '''import torch
import torch.nn.functional as F

def metrics(a, g, g_bp, x):
    n = x.norm(-1)
    c = F.cosine_similarity(a, g.grad)
    d = F.cosine_similarity(a, g_bp)
    with torch.autocast("cuda", dtype=torch.float16):
        pass
    B = torch.randn(10, 64)
    gamma = 1.0
    cos = (a * g).sum() if g is not None else 1.0
    return n, c, d, B, gamma, cos
'''

#: name -> argv after ``fadiag`` (the JSON format and -q are added). {tmp} is a scratch folder.
COMMANDS = {
    "audit_bp": ["audit", "checkpoints_example/resmlp_bp.pt"],
    "audit_dfa": ["audit", "checkpoints_example/resmlp_dfa.pt"],
    "credit_dfa": ["credit", "checkpoints_example/resmlp_dfa.pt"],
    "credit_toy": ["credit", "--toy-lq"],
    "edges": ["edges", "checkpoints_example/gsnn/gsnn.pt", "--top", "5"],
    "relevance": ["relevance", "checkpoints_example/multihead/multihead.pt", "--sensitivity", "--observation", "3"],
    "inspect": ["inspect", "checkpoints_example/resmlp_dfa.pt"],
    "lint": ["lint", "{tmp}/train_metrics.py"],
    "compare": ["compare", "{tmp}/audit_bp.json", "{tmp}/audit_dfa.json", "--baseline", "{tmp}/audit_bp.json"],
    "trajectory": ["trajectory", "{tmp}/run/step_0.pt", "{tmp}/run/step_3000.pt", "--spec",
                   "checkpoints_example/resmlp_bp.yaml"],
}


def _family_examples() -> None:
    """A family the commands above do not run gets its record's example (fadiag.registry: Family.example)."""
    from fadiag.registry import families

    for f in families():
        if f.example and not any(argv[0] == f.name for argv in COMMANDS.values()):
            COMMANDS[f.name] = [f.name, *f.example]


_family_examples()


def _invoke(argv: list) -> tuple:
    from typer.testing import CliRunner

    from fadiag.cli import app

    res = CliRunner(env={"NO_COLOR": "1"}).invoke(app, argv)
    assert res.exception is None or isinstance(res.exception, SystemExit), (argv, res.exception)
    return res.exit_code, res.stdout, res.stderr


@functools.lru_cache(maxsize=1)
def shipped_reports() -> dict:
    """name -> report dict, one run per command, from the repo root (paths in reports stay relative)."""
    tmp = tempfile.mkdtemp(prefix="fadiag-shipped-")
    Path(tmp, "train_metrics.py").write_text(LINT_SAMPLE)
    Path(tmp, "run").mkdir()  # a two-checkpoint run: the BP recipe's init and trained checkpoints
    for src, dst in (("resmlp_bp_init.pt", "step_0.pt"), ("resmlp_bp.pt", "step_3000.pt")):
        Path(tmp, "run", dst).write_bytes((REPO / "checkpoints_example" / src).read_bytes())
    out = {}
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        for name, argv in COMMANDS.items():
            argv = [a.format(tmp=tmp) for a in argv]
            quiet = ["-q"] if argv[0] not in ("inspect", "lint") else []
            code, stdout, stderr = _invoke(argv + ["--format", "json", *quiet])
            assert code in (0, 1), (name, stderr)
            out[name] = json.loads(stdout)
            if name.startswith("audit_"):
                Path(tmp, f"{name}.json").write_text(stdout)
    finally:
        os.chdir(cwd)
    return out
