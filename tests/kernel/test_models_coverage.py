"""docs/models.md's coverage table lists exactly the tested cases (tests/hf_zoo.py's 48 architectures and
tests/kernel/test_models_timm_tv.py's CASES), with the right default/slow split; each case's own test checks its
row against the audit (tests/coverage_table.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import hf_zoo
from coverage_table import HOW, rows

HERE = Path(__file__).resolve().parent  # tests/kernel: test_models_timm_tv.py and test_hf_zoo.py


def _timm_tv_cases() -> set:
    """CASES' keys in tests/kernel/test_models_timm_tv.py, read without importing it (timm may be absent)."""
    tree = ast.parse((HERE / "test_models_timm_tv.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "CASES" or \
                isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CASES" for t in node.targets):
            return {k.value for k in node.value.keys}
    raise AssertionError("no CASES in test_models_timm_tv.py")


def test_table_lists_exactly_the_tested_cases():
    r = rows()
    timm_tv = _timm_tv_cases()
    assert len(hf_zoo.ZOO) == 49 and len(timm_tv) == 14  # 48 architectures, Llama both tied and untied
    assert set(r) == set(hf_zoo.ZOO) | timm_tv
    for name, row in r.items():
        assert (HERE / row["file"]).is_file() and row["how"] in HOW, row
        in_zoo = name in hf_zoo.ZOO
        assert row["file"] == ("test_hf_zoo.py" if in_zoo else "test_models_timm_tv.py"), row
        assert row["slow"] == (in_zoo and name not in hf_zoo.DEFAULT), row
        if in_zoo:
            assert row["arch"] == hf_zoo.ZOO[name][0], row
