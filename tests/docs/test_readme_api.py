"""The README's Python API block runs as written, and returns the types and schemas its comments state."""

from __future__ import annotations

import re

import torch

from conftest import REPO


def _block() -> str:
    text = (REPO / "README.md").read_text()
    sec = text[text.index("## Python API"):]
    return sec[sec.index("```python") + len("```python"):sec.index("```", sec.index("```python") + 3)]


def test_readme_python_api_block_runs_and_states_true_types(monkeypatch):
    from fadiag.families.audit.report import AuditReport
    from fadiag.families.credit.report import CreditReport
    from fadiag.families.edges.report import EdgesReport
    from fadiag.subject import Subject

    code = _block()
    monkeypatch.chdir(REPO)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - the repository's own README
    assert isinstance(ns["subject"], Subject) and isinstance(ns["report"], AuditReport)
    assert isinstance(ns["credit"], CreditReport) and isinstance(ns["edges_report"], EdgesReport)
    assert isinstance(ns["W"], torch.Tensor) and ns["W"].shape[0] == ns["W"].shape[1]
    assert isinstance(ns["W2"], torch.Tensor) and tuple(ns["W2"].shape) == (5, 5)
    assert isinstance(ns["scores"], dict) and "mrr" in ns["scores"]
    assert isinstance(ns["rel"], dict) and {"trunk", "per_head"} <= set(ns["rel"])
    # every "schema X" the comments state is what the object says
    stated = {}
    for line in code.splitlines():
        m = re.search(r"schema (fadiag\.\w+/\d+)", line.partition("#")[2])
        if m:
            stated[line.partition(" = ")[0].split(",")[0].strip()] = m.group(1)
    assert set(stated) == {"report", "credit", "edges_report"}, stated
    for name, schema in stated.items():
        assert ns[name].to_dict()["schema"] == schema, name
