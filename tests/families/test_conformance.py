"""The one conformance test: every registered family (fadiag.registry) in every format, its reports' ``from_dict``
round trip, a sweep equal to single runs, its ``--help``, and docs/science.md naming every JSON key of its
reports. A new family's record brings it in here; its shipped example goes in tests/_shipped.py's COMMANDS."""

from __future__ import annotations

import json

import pytest

from _science import DOC, _named, schema_keys
from _shipped import COMMANDS, REPO, _invoke, shipped_reports

from fadiag.registry import families, form
from fadiag.render import Format, render
from fadiag.reports import from_dict

FAMILIES = [f.name for f in families()]
REPORTING = [f.name for f in families() if f.report]
SWEEPING = [f.name for f in families() if f.body]


def _reports(name: str) -> list:
    """The shipped reports of a family (tests/_shipped.py runs every command once)."""
    return [d for d in shipped_reports().values() if from_dict(d).family == name]


def test_the_registry_holds_every_family():
    shipped = ["audit", "calibrate", "credit", "edges", "relevance", "inspect", "lint", "compare", "trajectory"]
    assert [f for f in FAMILIES if f in shipped] == shipped  # in --help order; a new family adds to them
    assert [f for f in SWEEPING if f in shipped] == ["audit", "credit", "edges", "relevance"]


@pytest.mark.parametrize("name", REPORTING)
def test_every_family_has_a_shipped_report_and_its_forms(name):
    assert _reports(name), f"no shipped example of {name}: add one to tests/_shipped.py COMMANDS"
    for fmt in ("table", "markdown"):  # exhaustive dispatch: no family falls back to a generic form
        assert form(name, fmt) is not None, (name, fmt)


@pytest.mark.parametrize("fmt", [f.value for f in Format])
@pytest.mark.parametrize("name", REPORTING)
def test_every_family_in_every_format(name, fmt):
    reps = [from_dict(d) for d in _reports(name)]
    out = render(reps, fmt, color=False, width=100)
    assert out.strip(), (name, fmt)
    assert "no table view" not in out
    if fmt == "json":
        got = json.loads(out)
        assert (got if isinstance(got, list) else [got]) == [r.to_dict() for r in reps]
    elif fmt == "jsonl":
        assert [json.loads(line) for line in out.splitlines()] == [r.to_dict() for r in reps]
    elif fmt == "markdown":
        assert out.startswith(f"# fadiag {name}") or f"fadiag {name}" in out.splitlines()[0], out[:200]


@pytest.mark.parametrize("name", REPORTING)
def test_from_dict_round_trip(name):
    for d in _reports(name):
        r = from_dict(d)
        assert r.to_dict() == d
        assert from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == d


@pytest.mark.parametrize("name", SWEEPING)
def test_a_sweep_equals_single_runs(name):
    """The family's shipped example, its checkpoint given twice: a sweep whose two reports are the single run's."""
    key, argv = next((k, a) for k, a in COMMANDS.items() if a[0] == name and k in shipped_reports()
                     and shipped_reports()[k].get("checkpoint"))
    single = shipped_reports()[key]
    import os

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        code, out, err = _invoke([name, argv[1], *argv[1:], "--format", "jsonl", "-q"])
    finally:
        os.chdir(cwd)
    assert code in (0, 1), err
    got = [json.loads(line) for line in out.splitlines()]
    assert len(got) == 2
    for g in got:
        assert {k: v for k, v in g.items() if k != "settings"} == {k: v for k, v in single.items() if k != "settings"}


@pytest.mark.parametrize("name", FAMILIES)
def test_help(name):
    code, out, err = _invoke([name, "--help"])
    assert code == 0, err
    assert out.startswith(f"Usage: fadiag {name}") or f"fadiag {name}" in out.split("\n", 2)[0] + out, out[:200]
    code, top, _ = _invoke(["--help"])
    assert code == 0 and f"  {name} " in top


@pytest.mark.parametrize("name", REPORTING)
def test_science_doc_names_every_json_key(name):
    text = DOC.read_text(encoding="utf-8")
    keys = set().union(*(schema_keys(d) for d in _reports(name)))
    missing = sorted(k for k in keys if not _named(k, text))
    assert not missing, f"{name}: JSON keys not named in docs/science.md: {missing}"
