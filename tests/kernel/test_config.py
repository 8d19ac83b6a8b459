"""Project configuration (fadiag.yaml / [tool.fadiag]): CI runs `fadiag audit` and `fadiag edges` with no
paths; precedence flag > FADIAG_<OPTION> > config > default; the report records where settings came from."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import EXAMPLES


def run_main(argv, capsys):
    from fadiag.cli import main

    with pytest.raises(SystemExit) as ei:
        main(argv)
    out = capsys.readouterr()
    return ei.value.code, out.out, out.err


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copytree(EXAMPLES, tmp_path / "ex", ignore=shutil.ignore_patterns("mnist1d_train.npz"))
    monkeypatch.chdir(tmp_path)
    for var in ("FADIAG_FORMAT", "FADIAG_BATCHES", "FADIAG_SEED", "FADIAG_THRESHOLD", "FADIAG_ROW_CHUNK"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_yaml_config_runs_audit_with_no_paths(project, capsys):
    (project / "fadiag.yaml").write_text(
        "format: jsonl\nquiet: true\naudit:\n  checkpoints: [ex/resmlp_bp.pt, ex/resmlp_dfa.pt]\n"
        "  thresholds: {h_norm_explosion_ratio: 5000}\n")
    code, out, err = run_main(["audit"], capsys)
    reps = [json.loads(l) for l in out.splitlines()]
    assert [r["method_name"] for r in reps] == ["BP", "DFA"]
    assert all(r["thresholds"]["h_norm_explosion_ratio"] == 5000 for r in reps)
    assert reps[1]["flags"][0]["flagged"] is False  # (a) no longer fires at 5000 (growth ~1.8e3)
    assert reps[0]["settings"] == {"checkpoints": "config", "threshold": "config"}
    assert reps[0]["settings_config"].endswith("fadiag.yaml")
    assert code == 1 and err == ""


def test_pyproject_table_runs_edges_with_row_chunk(project, capsys):
    (project / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.fadiag]\nformat = "json"\n\n[tool.fadiag.edges]\n'
        'checkpoint = "ex/gsnn/gsnn.pt"\nrow-chunk = 7\nquiet = true\n')
    code, out, err = run_main(["edges"], capsys)
    rep = json.loads(out)
    assert rep["params"]["row_chunk"] == 7 and rep["settings"]["row_chunk"] == "config"
    assert rep["schema"] == "fadiag.edges/2" and code == 0


def test_precedence_flag_over_env_over_config(project, capsys, monkeypatch):
    (project / "fadiag.yaml").write_text("format: jsonl\naudit:\n  checkpoints: [ex/resmlp_bp.pt]\n  batches: 3\n")
    code, out, _ = run_main(["audit", "-q"], capsys)
    assert json.loads(out)["data"]["batches"] == 3
    monkeypatch.setenv("FADIAG_BATCHES", "4")
    code, out, _ = run_main(["audit", "-q"], capsys)
    rep = json.loads(out)
    assert rep["data"]["batches"] == 4 and rep["settings"]["batches"] == "env"
    code, out, _ = run_main(["audit", "-q", "--batches", "5"], capsys)
    rep = json.loads(out)
    assert rep["data"]["batches"] == 5 and rep["settings"]["batches"] == "flag"


def test_unknown_config_key_is_exit_2_with_suggestion(project, capsys):
    (project / "fadiag.yaml").write_text("audit:\n  checkpoint: [ex/resmlp_bp.pt]\n")
    code, out, err = run_main(["audit"], capsys)
    assert code == 2 and "did you mean 'checkpoints'" in err and out == ""
    (project / "fadiag.yaml").write_text("formt: json\n")
    code, out, err = run_main(["audit"], capsys)
    assert code == 2 and "did you mean 'format'" in err


def test_bad_toml_is_exit_2(project, capsys):
    (project / "pyproject.toml").write_text("[tool.fadiag\n")
    code, out, err = run_main(["audit", "ex/resmlp_bp.pt"], capsys)
    assert code == 2 and "invalid TOML" in err
