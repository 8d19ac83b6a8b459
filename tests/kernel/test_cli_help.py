"""Every command's --help: no typer placeholders, no "[required]", defaults named (with where they come from in
the spec); a missing argument is still the one-line usage error."""

from __future__ import annotations

import pytest

from fadiag.registry import families

#: every command: each family's and ``report``
COMMANDS = [f.name for f in families()] + ["report"]


def _help(run_cli, cmd):
    code, out, err = run_cli([cmd, "--help"])
    assert code == 0, err
    return out


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_has_no_placeholders_and_no_required(run_cli, cmd):
    out = _help(run_cli, cmd)
    for bad in ("{", "<list[", "<str>", "<path>", "<int range>", "[required]", "<float>"):
        assert bad not in out, (cmd, bad)


def test_help_names_defaults_and_missing_arguments_still_fail(run_cli):
    credit = " ".join(_help(run_cli, "credit").split())
    assert "--toy-d N Toy LQ width. [default: 16]" in credit
    assert "credit.eps in the spec, else 0.001" in credit and "credit.signal in the spec, else bp" in credit
    edges = " ".join(_help(run_cli, "edges").split())
    assert "[default: 20]" in edges and "edges.method in the spec, else spearman" in edges
    code, out, err = run_cli(["lint"])  # no path, no config: still the one-line usage error
    assert code == 2 and err.count("\n") == 1 and "Missing argument" in err
