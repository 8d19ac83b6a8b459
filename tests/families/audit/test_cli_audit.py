"""`fadiag audit` / `fadiag report` end to end: the shipped examples, the output contract (stdout = report,
stderr = verdict/errors, exit codes, atomic --output), and bad inputs (exit 2, one stderr line, no
traceback, nothing unpickled).

Runs in-process through CliRunner (conftest.invoke_cli) except where a real process is the point.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from _budget import HANG_GUARD_S
import torch

from fadiag.families.audit.report import AUDIT_KEYS

from _payloads import CheckpointBox, RunsShellOnLoad
from conftest import EXAMPLES, REPO, invoke_cli

DFA = EXAMPLES / "resmlp_dfa.pt"
BP = EXAMPLES / "resmlp_bp.pt"
A = "residual stream exploded"
B = "BP grad at numerical floor"


@pytest.fixture(scope="module")
def dfa_json():
    code, out, err = invoke_cli(["audit", DFA, "--format", "json"])
    return code, out, err


@pytest.fixture(scope="module")
def bp_json():
    return invoke_cli(["audit", BP, "--format", "json"])


def one_error_line(code, out, err, *needles):
    assert code == 2, (code, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------ shipped examples

def test_dfa_is_walked_back(dfa_json):
    code, out, err = dfa_json
    assert code == 1
    d = json.loads(out)
    assert d["verdict"].startswith("needs walk-back: ")
    assert A in d["verdict"] and B in d["verdict"]
    assert d["verdict"].index(A) < d["verdict"].index(B)  # order (a), (b), ...
    flagged = {f["id"] for f in d["flags"] if f["flagged"]}
    assert {"a", "b"} <= flagged and "e" not in flagged
    assert d["growth"] > 50 and d["bp_grad_norms"][-1] < 1e-7


def test_bp_is_trustworthy(bp_json):
    code, out, err = bp_json
    assert code == 0
    d = json.loads(out)
    assert d["verdict"] == "trustworthy"
    assert not any(f["flagged"] for f in d["flags"])
    assert "trustworthy" in err


def test_table_format_names_the_verdict(run_cli):
    code, out, err = run_cli(["audit", DFA, "--format", "table"])
    assert code == 1
    assert "verdict: needs walk-back" in out and A in out and B in out
    assert max(len(line) for line in out.splitlines()) <= 120  # COLUMNS pinned


def test_json_contract(dfa_json):
    _, out, _ = dfa_json
    d = json.loads(out)
    assert set(AUDIT_KEYS) <= set(d)
    assert list(d)[: len(AUDIT_KEYS)] == list(AUDIT_KEYS)  # stable key order
    assert d["schema"] == "fadiag.audit/1"
    assert len(d["residual_norms"]) == 7 and len(d["bp_grad_norms"]) == 7
    assert d["stability_layer"] == 3
    assert list(d["thresholds"])[:4] == ["g_norm_floor", "h_norm_explosion_ratio", "stability_drift_ceiling",
                                         "frozen_acc_margin_pp"]  # first: a declared quantity may add more
    assert [f["id"] for f in d["flags"]][:4] == ["a", "b", "c", "d"]
    assert d["checkpoint"] == {"path": str(DFA), "sha256": hashlib.sha256(DFA.read_bytes()).hexdigest(),
                               "format": "torch", "trusted": False}
    assert d["data"]["batches"] == 8 and d["data"]["batch_size"] == 128
    assert d["method_name"] == "DFA" and d["frozen_baseline_acc"] == 0.502


def test_default_format_off_a_terminal_is_json(run_cli, tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt()
    code, out, _ = run_cli(["audit", files.ckpt])
    assert code == 0 and json.loads(out)["schema"] == "fadiag.audit/1"


def test_jsonl_and_json_with_two_checkpoints(run_cli):
    code, out, err = run_cli(["audit", BP, DFA, "--format", "jsonl"])
    assert code == 1  # one of them is flagged
    lines = out.splitlines()
    assert len(lines) == 2
    objs = [json.loads(line) for line in lines]
    assert [o["method_name"] for o in objs] == ["BP", "DFA"]
    assert objs[0]["verdict"] == "trustworthy" and objs[1]["verdict"].startswith("needs walk-back")
    assert len(err.strip().splitlines()) == 2  # one verdict line per checkpoint
    code, out, _ = run_cli(["audit", BP, DFA, "--format", "json"])
    arr = json.loads(out)
    assert isinstance(arr, list) and len(arr) == 2


def test_exit_zero(run_cli):
    code, out, _ = run_cli(["audit", DFA, "--format", "json", "--exit-zero"])
    assert code == 0 and json.loads(out)["verdict"].startswith("needs walk-back")


def test_streams_report_on_stdout_verdict_on_stderr(dfa_json, run_cli):
    code, out, err = dfa_json
    json.loads(out)  # stdout is exactly the report
    assert "fadiag:" not in out
    lines = err.strip().splitlines()
    assert lines == [f"fadiag: {DFA}: " + json.loads(out)["verdict"]]
    code, out_q, err_q = run_cli(["audit", DFA, "--format", "json", "--quiet"])
    assert code == 1 and err_q == ""
    assert without_settings(json.loads(out_q)) == without_settings(json.loads(out))


def without_settings(d: dict) -> dict:
    """The report minus ``settings`` (where each option came from: it names --output/--quiet when given)."""
    return {k: v for k, v in d.items() if k != "settings"}


def test_output_is_written_atomically(dfa_json, run_cli, tmp_path):
    _, expected, _ = dfa_json
    target = tmp_path / "report.json"
    code, out, err = run_cli(["audit", DFA, "--format", "json", "--output", target])
    assert code == 1
    assert out == ""
    written = target.read_text(encoding="utf-8")
    assert without_settings(json.loads(written)) == without_settings(json.loads(expected))
    ws = json.loads(written).get("settings", {})
    ws.pop("output", None)  # the report may record that --output was given; nothing else may differ
    assert ws == json.loads(expected).get("settings", {})
    if "settings" not in json.loads(written) or "output" not in json.loads(written)["settings"]:
        assert written == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temp file left behind
    assert str(target) in err


def test_failed_run_leaves_existing_output_untouched(run_cli, tmp_path):
    target = tmp_path / "report.json"
    target.write_text("previous")
    code, out, err = run_cli(["audit", tmp_path / "nope.pt", "--format", "json", "--output", target])
    one_error_line(code, out, err, "no such file")
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_output_into_missing_folder_is_exit_2(run_cli, tmp_path):
    code, out, err = run_cli(["audit", BP, "-f", "json", "-o", tmp_path / "no" / "such" / "r.json"])
    assert code == 2 and out == "" and "Traceback" not in err
    assert "--output" in err and "folder does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "no").exists()


def test_report_rerenders_saved_json(run_cli, tmp_path, dfa_json):
    _, saved, _ = dfa_json
    f = tmp_path / "saved.json"
    f.write_text(saved)
    code, table, _ = run_cli(["report", f, "--format", "table"])
    assert code == 1  # the saved report records a flag
    assert "verdict: needs walk-back" in table and A in table
    _, live_table, _ = run_cli(["audit", DFA, "--format", "table"])
    assert table == live_table  # renderers never compute: same text as the live run
    code, again, _ = run_cli(["report", f, "--format", "json"])
    assert again == saved
    code, _, _ = run_cli(["report", f, "--format", "table", "--exit-zero"])
    assert code == 0


def test_report_reads_jsonl_and_rejects_non_reports(run_cli, tmp_path):
    _, lines, _ = run_cli(["audit", BP, DFA, "--format", "jsonl"])
    f = tmp_path / "saved.jsonl"
    f.write_text(lines)
    code, out, _ = run_cli(["report", f, "--format", "jsonl"])
    assert code == 1 and out == lines
    bad = tmp_path / "other.json"
    bad.write_text('{"hello": 1}')
    one_error_line(*run_cli(["report", bad, "--format", "table"]), "not a fadiag report")


def test_report_is_not_silenced_by_an_earlier_quiet_audit(run_cli, tmp_path, dfa_json):
    f = tmp_path / "saved.json"
    f.write_text(dfa_json[1])
    run_cli(["audit", BP, "-f", "json", "--quiet"])
    _, _, err = run_cli(["report", f, "-f", "table", "-o", tmp_path / "out.txt"])
    assert "wrote" in err


def test_import_cli_does_not_import_torch():
    code = "import sys, fadiag.cli; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=HANG_GUARD_S)
    assert r.returncode == 0, r.stderr


def test_python_m_fadiag_help():
    r = subprocess.run([sys.executable, "-m", "fadiag", "--help"], capture_output=True, text=True, cwd=REPO,
                       timeout=HANG_GUARD_S, env={**os.environ, "COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    assert "audit" in r.stdout and "report" in r.stdout and "Exit codes" in r.stdout


# ----------------------------------------------------------------------------------- other formats

@pytest.mark.parametrize("fmt, recorded", [("safetensors", "safetensors"), ("npz", "npz")])
def test_safetensors_and_npz_checkpoints_audit(run_cli, tiny_resmlp_ckpt, tmp_path, fmt, recorded):
    ref = tiny_resmlp_ckpt(name="ref", fmt="pt")
    files = tiny_resmlp_ckpt(name="other", fmt=fmt)
    assert files.spec_dict["checkpoint"]["state_dict"] == "auto"
    _, out_ref, _ = run_cli(["audit", ref.ckpt, "-f", "json"])
    code, out, err = run_cli(["audit", files.ckpt, "-f", "json"])
    assert code == 0, err
    d, r = json.loads(out), json.loads(out_ref)
    assert d["checkpoint"]["format"] == recorded
    assert d["checkpoint"]["sha256"] == hashlib.sha256(files.ckpt.read_bytes()).hexdigest()
    assert d["residual_norms"] == r["residual_norms"] and d["bp_grad_norms"] == r["bp_grad_norms"]
    assert d["cross_batch_stability"] == r["cross_batch_stability"]


# ------------------------------------------------------------------------------------- bad inputs

def _garbage(tmp_path, _):
    p = tmp_path / "garbage.pt"
    p.write_bytes(b"\x00GARBAGE" + bytes((i * 37 + 1) % 256 for i in range(400)))
    return [p], ["unrecognised file format"]


def _truncated(tmp_path, _):
    p = tmp_path / "resmlp_bp.pt"
    data = BP.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    shutil.copy(EXAMPLES / "resmlp_bp.yaml", tmp_path / "resmlp_bp.yaml")
    return [p], ["corrupt"]


def _empty(tmp_path, _):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    return [p], ["empty"]


def _text(tmp_path, _):
    p = tmp_path / "notes.txt"
    p.write_text("these are my notes, not a checkpoint\n" * 3)
    return [p], ["unrecognised file format"]


def _missing(tmp_path, _):
    return [tmp_path / "nope.pt"], ["nope.pt", "no such file"]


def _spec_typo(_, make):
    f = make(spec_overrides={"data": {"batch_sise": 16}})
    return [f.ckpt], [str(f.spec), "data.batch_sise", "did you mean 'batch_size'"]


def _spec_wrong_type(_, make):
    f = make(spec_overrides={"data": {"batch_size": "sixteen"}})
    return [f.ckpt], [str(f.spec), "data.batch_size", "expected an integer", "sixteen"]


def _spec_bad_yaml(tmp_path, make):
    f = make()
    f.spec.write_text("model: [resmlp\ndata: {")
    return [f.ckpt], [str(f.spec), "invalid YAML"]


def _no_spec(_, make):
    f = make(sidecar=False)
    return [f.ckpt], ["no spec found", "--spec"]


def _data_short(_, make):
    f = make(n_rows=40)
    return [f.ckpt], ["40 rows", "4 x 16 = 64"]


def _data_bad_label(_, make):
    f = make()
    import numpy as np

    np.savez(f.data, x=f.x.numpy(), y=(f.y + 5).numpy())
    return [f.ckpt], ["out of range", "3 classes"]


def _data_nan(_, make):
    f = make()
    import numpy as np

    x = f.x.numpy().copy()
    x[3, 2] = np.nan
    np.savez(f.data, x=x, y=f.y.numpy())
    return [f.ckpt], ["1 non-finite"]


def _data_missing(_, make):
    f = make()
    f.data.unlink()
    return [f.ckpt], [str(f.data), "no such data file"]


def _baseline_acc_nan(_, make):
    return [make().ckpt, "--frozen-baseline-acc", "nan"], ["frozen baseline accuracy", "[0, 1]"]


def _headline_acc_out_of_range(_, make):
    return [make().ckpt, "--headline-acc", "1.5"], ["headline accuracy", "[0, 1]"]


def _shape_mismatch(_, make):
    f = make(spec_overrides={"model": {"args": {"width": 16}}})
    return [f.ckpt], ["shape mismatch", "embed.weight (8, 8) vs spec (16, 8)"]


BAD_INPUTS = {
    "garbage": _garbage, "truncated_pt": _truncated, "empty": _empty, "text_file": _text, "missing": _missing,
    "spec_typo_key": _spec_typo, "spec_wrong_type": _spec_wrong_type, "spec_bad_yaml": _spec_bad_yaml,
    "no_spec": _no_spec, "data_too_short": _data_short, "label_out_of_range": _data_bad_label,
    "shape_mismatch": _shape_mismatch, "data_nan": _data_nan, "data_missing": _data_missing,
    "baseline_acc_nan": _baseline_acc_nan, "headline_acc_out_of_range": _headline_acc_out_of_range,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(run_cli, tmp_path, tiny_resmlp_ckpt, case):
    args, needles = BAD_INPUTS[case](tmp_path, tiny_resmlp_ckpt)
    line = one_error_line(*run_cli(["audit", *args, "-f", "json"]), *needles)
    assert line.startswith("fadiag: error: ")


def test_garbage_with_pickle_magic_is_reported_corrupt(run_cli, tmp_path):
    p = tmp_path / "garbage.pt"
    p.write_bytes(b"\x80\x02" + bytes((i * 37) % 256 for i in range(300)))
    line = one_error_line(*run_cli(["audit", p]))
    assert "corrupt" in line and "--trust-checkpoint" not in line


def _payload_ckpt(folder, marker, legacy=False):
    p = folder / "evil.pt"
    sd = {"w": torch.zeros(2)}
    torch.save({"model": sd, "hook": RunsShellOnLoad(f"touch {marker}")}, p,
               _use_new_zipfile_serialization=not legacy)
    return p


@pytest.mark.parametrize("legacy", [
    False,
    True,
])
def test_code_payload_is_refused_and_never_runs(run_cli, tmp_path, legacy):
    marker = tmp_path / "MARKER"
    p = _payload_ckpt(tmp_path, marker, legacy)
    line = one_error_line(*run_cli(["audit", p, "-f", "json"]), "refusing to unpickle", "--trust-checkpoint")
    assert not marker.exists() and not (REPO / "MARKER").exists()
    assert f"{os.system.__module__}.system" in line.split(";")[0].split()  # 'posix.system', named exactly


def test_code_payload_refused_in_a_real_process(tmp_path):
    marker = tmp_path / "MARKER"
    p = _payload_ckpt(tmp_path, marker)
    r = subprocess.run([sys.executable, "-m", "fadiag", "audit", str(p), "--format", "json"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "posix.system" in r.stderr or "nt.system" in r.stderr
    assert not marker.exists() and not (tmp_path / "MARKER").exists()


def test_trust_checkpoint_loads_a_custom_class_and_is_recorded(run_cli, tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt()
    _, plain, _ = run_cli(["audit", files.ckpt, "-f", "json"])
    torch.save(CheckpointBox(model=files.state_dict, epoch=3), files.ckpt)

    line = one_error_line(*run_cli(["audit", files.ckpt, "-f", "json"]), "--trust-checkpoint")
    assert f"{CheckpointBox.__module__}.CheckpointBox" in line

    code, out, err = run_cli(["audit", files.ckpt, "-f", "json", "--trust-checkpoint"])
    assert code == 0, err
    d, p = json.loads(out), json.loads(plain)
    assert d["checkpoint"]["trusted"] is True and p["checkpoint"]["trusted"] is False
    assert d["residual_norms"] == p["residual_norms"]
    assert "trust" in err  # the warning goes to stderr


def test_summary_has_no_null_baseline_and_no_dict_repr(monkeypatch):
    from _shipped import shipped_reports
    from fadiag.render import render

    monkeypatch.setenv("COLUMNS", "100")
    rep = dict(shipped_reports()["audit_bp"])
    trained = {**rep, "frozen_baseline_source": "trained: frozen blocks (seed 0), BP recipe "
                                                "{'optimizer': 'AdamW', 'lr': 0.002, 'epochs': 10}"}
    for fmt in ("table", "markdown"):
        out = render([trained], fmt)
        assert "optimizer AdamW, lr 0.002, epochs 10" in out and "{'" not in out, fmt
    none = {**rep, "frozen_baseline_acc": None, "frozen_baseline_source": None}
    out = render([none], "table")
    assert "no frozen baseline, (d) skipped" in out and "baseline null" not in out and "None" not in out
