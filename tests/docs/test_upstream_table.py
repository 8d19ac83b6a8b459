"""docs/upstream.md's table of intended differences states the sizes benchmarks/upstream_table.py measures
(issue 27): a size that drifts, or a row that goes missing, fails here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import upstream_table as U  # noqa: E402


@pytest.fixture(scope="module")
def measured():
    return U.expected()


def test_the_table_states_every_measured_size(measured):
    pytest.importorskip("tensorstore", reason="the alberta rows need the alberta extra (tensorstore)")
    assert len(measured) == 8
    assert U.check(U.DOC.read_text(), measured) == []


def test_the_check_fails_on_a_drifted_or_missing_size(measured):
    text = U.DOC.read_text()
    row = U.table_rows(text)["protocol: midpoint option"]
    assert U.fmt(0.02912) == "2.9e-2" and U.fmt(78.3) == "7.8e1" and U.fmt(2.0e-7) == "2.0e-7"
    drifted = text.replace(row, row.replace("7.9e-2", "7.3e-3"))
    assert any("7.9e-2" in p for p in U.check(drifted, measured))
    bound = text.replace("fadiag's by ≤ 1e-6", "fadiag's by ≤ 1e-9")
    assert any("edges: row order" in p for p in U.check(bound, measured))
    assert U.check(text.replace("| credit: precision |", "| credit |"), measured) == ["no row 'credit: precision'"]
