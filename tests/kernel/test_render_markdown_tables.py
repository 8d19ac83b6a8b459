"""Every markdown table of every command parses as a table (markdown-it-py, the parser rich uses), has a
cell per header in every row, and holds no Python repr; the credit form carries Δ_l and both means,
relevance the per-observation Jacobian, edges and lint their records as real tables, each number equal
to the report's at the printed precision."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

from _shipped import COMMANDS, shipped_reports

from fadiag.render import markdown
from fadiag.reports import from_dict

REPR = re.compile(r"\{'|'\}|\[\{|\}\]|^\[.*\]$|^\(.*,.*\)$|\bNone\b|\bTrue\b|\bFalse\b|^'.*'$|\bnan\b|\binf\b")


def split_row(line: str) -> list:
    """Cells of one table line: split on unescaped pipes, outer ones dropped."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def tables(md: str) -> list:
    """Every table as (header, rows); asserts the block's shape on the way."""
    out, block = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            head, sep, *rows = block
            assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", sep), block[:2]
            n = len(split_row(head))
            assert len(split_row(sep)) == n
            for r in rows:
                assert len(split_row(r)) == n, (head, r)
            out.append((split_row(head), [split_row(r) for r in rows]))
            block = []
    return out


def parsed_tables(md: str) -> list:
    """(n header cells, n body rows) per table, as markdown-it-py parses the text."""
    toks = MarkdownIt("commonmark").enable("table").parse(md)
    out, th, rows, in_body = [], 0, 0, False
    for t in toks:
        if t.type == "table_open":
            th, rows = 0, 0
        elif t.type == "th_open":
            th += 1
        elif t.type == "tbody_open":
            in_body = True
        elif t.type == "tbody_close":
            in_body = False
        elif t.type == "tr_open" and in_body:
            rows += 1
        elif t.type == "table_close":
            out.append((th, rows))
    return out


def _all_markdown():
    reps = shipped_reports()
    out = {name: markdown.render([from_dict(rep)]) for name, rep in reps.items()}
    out["audit_both"] = markdown.render([from_dict(reps["audit_bp"]), from_dict(reps["audit_dfa"])])
    return out


@pytest.mark.parametrize("name", list(COMMANDS) + ["audit_both"])
def test_every_markdown_table_parses(name):
    md = _all_markdown()[name]
    found = tables(md)
    assert found, name
    assert parsed_tables(md) == [(len(h), len(rows)) for h, rows in found]
    for head, rows in found:
        for cell in head + [c for r in rows for c in r]:
            if not (cell.startswith("`") and cell.endswith("`")):  # quoted source code may say None
                assert not REPR.search(cell), (name, head, cell)


def test_parser_catches_a_broken_table():
    bad = "| a | b |\n|---|---|\n| 1 | 2 | 3 |\n"
    with pytest.raises(AssertionError):
        tables(bad)
    assert REPR.search("[{'rank': 1}]") and REPR.search("None") and not REPR.search("0.5, 1.5")


def _num(cell: str) -> float:
    return float(cell)


def _close(cell: str, want: float):
    """A printed number equals the report's to the digits it shows (4 significant at least)."""
    assert _num(cell) == pytest.approx(want, rel=2e-3, abs=0 if want else 1e-12), (cell, want)


def _table_with(md: str, header_start: str):
    for head, rows in tables(md):
        if head and head[0] == header_start:
            return head, rows
    raise AssertionError(f"no table starting with {header_start!r}")


def test_credit_markdown_has_delta_and_both_means():
    rep = shipped_reports()["credit_dfa"]
    md = markdown.render([from_dict(rep)])
    head, rows = _table_with(md, "layer l")
    eta = rep["params"]["etas"][0]
    d = head.index(f"Δ_l (η = {eta})")
    g = head.index("Γ_l")
    assert len(rows) == len(rep["layers"])
    for row, layer in zip(rows, rep["layers"]):
        _close(row[d], layer["nudging"][str(eta)])
        _close(row[g], layer["gamma"])
        assert row[head.index("Γ_l readable")] == ("yes" if layer["gamma_interpretable"] else "no")
    head, rows = _table_with(md, "metric")
    a, dp = head.index("all layers (l = 0..L)"), head.index("deep only (l ≥ 1)")
    by = {r[0]: r for r in rows}
    for k, v in rep["means"].items():
        _close(by[k][a], v["all_layers"])
        _close(by[k][dp], v["deep_only"])
    assert f"nudging@{eta}" in by


def test_relevance_markdown_has_the_jacobian():
    rep = shipped_reports()["relevance"]
    md = markdown.render([from_dict(rep)])
    jac = rep["sensitivity"]["observation"]["jacobian"]
    for head in rep["head_names"]:
        assert f"## Head `{head}`" in md
    section = md.split(f"## Head `{rep['head_names'][0]}`")[1]
    head, rows = tables(section)[0]
    j = head.index("∂pred/∂x at the observation")
    for row in rows:
        _close(row[j], jac[rep["head_names"][0]][row[0]])


def test_edges_and_lint_records_are_tables():
    reps = shipped_reports()
    md = markdown.render([from_dict(reps["edges"])])
    head, rows = _table_with(md, "rank")
    assert head == ["rank", "source", "target", "score", "known", "true"]
    for row, e in zip(rows, reps["edges"]["top_edges"]):
        assert [int(row[0]), int(row[1]), int(row[2])] == [e["rank"], e["source"], e["target"]]
        _close(row[3], e["score"])
    assert "top_edges" not in md.split("## Top")[0]  # not also dumped as one cell
    md = markdown.render([from_dict(reps["lint"])])
    head, rows = _table_with(md, "file")
    assert len(rows) == len(reps["lint"]["findings"]) == 7 and "line" in head and "rule" in head
    assert [r[-1] for r in rows] == [f"`{x['text']}`" for x in reps["lint"]["findings"]]
