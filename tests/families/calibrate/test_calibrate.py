"""Calibration (docs/science.md §1, "Calibration"): every audit flag carries its calibration; a threshold crossed
outside it is shown, not a walk-back; ``fadiag calibrate`` derives thresholds that separate healthy from degenerate
runs made by the repo's recipe (fadiag.examples.train_calibration), and an audit reads them back."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml

from _shipped import REPO, shipped_reports
from fadiag.families.calibrate.api import threshold_for
from fadiag.calibration import PUBLISHED, Calibration, judge, load, model_context
from fadiag.reports.base import Flag, verdict_of

EX = REPO / "checkpoints_example"
KEYS = {"source", "family", "data", "layout", "inside", "why", "crossed"}


def test_every_flag_of_every_shipped_audit_report_has_its_calibration():
    reps = {k: v for k, v in shipped_reports().items() if k.startswith("audit")}
    assert reps
    for name, rep in reps.items():
        assert rep["calibration"]["name"] == "published" and rep["calibration"]["model"]["family"] == "resmlp"
        for f in rep["flags"]:
            assert KEYS <= set(f["calibration"]), (name, f["id"])
            assert f["calibration"]["inside"] is True  # the protocol's own models, at 8 x 128
    fired = {f["id"] for f in reps["audit_dfa"]["flags"] if f["flagged"]}
    assert {"a", "b"} <= fired and reps["audit_bp"]["verdict"] == "trustworthy"
    for name, rep in shipped_reports().items():  # other families' flags have no such key
        if not name.startswith("audit"):
            assert all("calibration" not in f for f in rep["flags"]), name


def _flag(fid="c", value=0.5, flagged=True):
    return Flag(fid, f"check {fid}", flagged, value, 0.3, "")


def test_a_crossing_outside_calibration_is_shown_not_flagged():
    gpt2 = model_context("gpt2", 8, 8, 128)
    f = judge(_flag(), PUBLISHED.flags["c"], gpt2, PUBLISHED, None)
    assert f.flagged is False and f.value == 0.5
    assert f.calibration["inside"] is False and f.calibration["crossed"] is True and "gpt2" in f.calibration["why"]
    assert verdict_of([f]) == "out of calibration: check c"
    walk = judge(_flag("a", 99.0), PUBLISHED.flags["a"], model_context("resmlp", 8, 8, None), PUBLISHED, None)
    assert walk.flagged is True  # (a) is calibrated at any batch size
    assert verdict_of([walk, f]) == "needs walk-back: check a (out of calibration: check c)"
    # resmlp at batch 8 is outside (c)'s layout; at 128 it is inside and flags
    assert judge(_flag(), PUBLISHED.flags["c"], model_context("resmlp", 8, 8, None), PUBLISHED, None).flagged is False
    assert judge(_flag(), PUBLISHED.flags["c"], model_context("resmlp", 128, 8, None), PUBLISHED, None).flagged


def test_non_finite_and_user_thresholds_and_flag_mode_still_flag():
    gpt2 = model_context("gpt2", 8, 8, 128)
    assert judge(_flag(value=None), PUBLISHED.flags["c"], gpt2, PUBLISHED, None).flagged is True  # NaN never passes
    given = judge(_flag(), PUBLISHED.flags["c"], gpt2, PUBLISHED, "--threshold")
    assert given.flagged is True and given.calibration["inside"] is True
    strict = Calibration("strict", "x.yaml", PUBLISHED.flags, out_of_calibration="flag")
    assert judge(_flag(), PUBLISHED.flags["c"], gpt2, strict, None).flagged is True
    quiet = judge(_flag(value=0.1, flagged=False), PUBLISHED.flags["c"], gpt2, PUBLISHED, None)
    assert verdict_of([quiet]) == "trustworthy" and quiet.calibration["crossed"] is False


def test_threshold_between_healthy_and_degenerate():
    thr, margin, sep = threshold_for("a", [1.5, 2.0], [40.0, 1000.0])
    assert thr == pytest.approx(math.sqrt(2.0 * 40.0)) and sep and "4.47x" in margin
    thr, _, sep = threshold_for("d", [12.0, 20.0], [-5.0, -20.0])
    assert thr == pytest.approx((12.0 - 5.0) / 2) and sep
    thr, _, sep = threshold_for("b", [2e-3, 4e-3], [5e-8])
    assert thr == pytest.approx(math.sqrt(2e-3 * 5e-8))
    # a degenerate value within twice the margin of the healthy range is not one (c) can tell apart
    thr, _, sep = threshold_for("c", [-0.1, 0.2], [0.25, 0.9])
    assert thr == pytest.approx((0.2 + 0.9) / 2) and not sep
    # nothing beyond: the published threshold when it leaves the margin, else the healthy extreme moved out
    assert threshold_for("c", [0.0, 0.1], [0.05])[0] == 0.30
    assert threshold_for("c", [0.0, 0.25], [])[0] == pytest.approx(0.35)
    assert threshold_for("a", [1.0, 40.0], [])[0] == pytest.approx(80.0)


def test_calibration_file_round_trip_and_refusals(tmp_path, run_cli):
    from fadiag.calibration import dump

    p = tmp_path / "c.yaml"
    p.write_text(dump(PUBLISHED))
    back = load(p)
    assert back.thresholds == PUBLISHED.thresholds and back.flags["c"].batch_size == (128, 128)
    assert back.flags["a"].degenerate == (694.0, math.inf)
    bad = tmp_path / "bad.yaml"
    for text in ("schema: other\nflags: {}\n", "schema: fadiag.calibration/1\nflags: {z: {value: 1}}\n",
                 "schema: fadiag.calibration/1\nflags: {a: {value: x}}\n"):
        bad.write_text(text)
        code, _, err = run_cli(["audit", EX / "resmlp_bp.pt", "--calibration", bad, "-q", "-f", "json"])
        assert code == 2 and err.count("\n") == 1 and "bad.yaml" in err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of the recipe's healthy (BP) and degenerate (DFA) runs, shortened."""
    from fadiag.examples.train_calibration import make_runs

    out = tmp_path_factory.mktemp("runs")
    data = out / "data"
    data.mkdir()
    for f in ("mnist1d_train.npz", "mnist1d_test.npz"):
        shutil.copy(EX / f, data / f)
    make_runs(out, data, seeds=2, epochs=2, dfa_epochs=3)
    return out


def test_calibrate_separates_shipped_and_seeded_runs_and_an_audit_uses_it(runs, tmp_path, run_cli):
    code, out, _ = run_cli(["audit", EX / "resmlp_bp.pt", "-q", "-f", "json"])
    saved = tmp_path / "bp.json"
    saved.write_text(out)  # a saved report is an input too
    cal = tmp_path / "mine.yaml"
    code, _, err = run_cli(["calibrate", saved, runs / "bp_s0.pt", runs / "bp_s1.pt", "-d", EX / "resmlp_dfa.pt",
                            "-d", runs / "dfa_s0.pt", "-d", runs / "dfa_s1.pt", "-o", cal])
    assert code == 0, err
    assert "separates every healthy run" in err
    doc = yaml.safe_load(cal.read_text())
    assert doc["provenance"]["separates"] is True
    for fid in "abcd":
        f = doc["flags"][fid]
        assert f["families"] == ["resmlp"] and len(f["healthy"]) == 2
    by_role = {r["run"]: (r["role"], r["fires"]) for r in doc["provenance"]["runs"]}
    assert all(bool(fires) == (role == "degenerate") for role, fires in by_role.values())
    for ckpt, bad in ((runs / "bp_s1.pt", False), (runs / "dfa_s1.pt", True), (EX / "resmlp_dfa.pt", True)):
        code, out, _ = run_cli(["audit", ckpt, "--calibration", cal, "-q", "-f", "json"])
        rep = json.loads(out)
        assert rep["calibration"]["name"] == "mine" and rep["calibration"]["origin"] == str(cal)
        assert (code == 1) == bad and rep["verdict"].startswith("needs walk-back") == bad
        assert all(f["calibration"]["source"].startswith("mine") for f in rep["flags"] if f["id"] in "abcd")
        assert rep["thresholds"]["h_norm_explosion_ratio"] == pytest.approx(doc["flags"]["a"]["value"])


def test_calibrate_refuses_what_it_cannot_use(tmp_path, run_cli):
    old = dict(shipped_reports()["audit_bp"])
    del old["calibration"]
    p = tmp_path / "old.json"
    p.write_text(json.dumps(old))
    code, _, err = run_cli(["calibrate", p])
    assert code == 2 and "audit the checkpoint again" in err
    code, _, err = run_cli(["calibrate", EX / "resmlp_bp.pt", "--flags", "a,x"])
    assert code == 2 and "--flags" in err


def test_project_config_names_the_calibration_and_the_report_records_it(tmp_path, monkeypatch, capsys):
    """``calibration:`` under ``audit`` in fadiag.yaml; a stricter (c) for resmlp at any batch size flags (c) on
    the shipped BP model at batch 64, where the published (c) is out of calibration and not a walk-back."""
    from fadiag.cli import main

    (tmp_path / "tight.yaml").write_text("schema: fadiag.calibration/1\nname: tight\nflags:\n"
                                         "  c: {value: -0.99, families: [resmlp]}\n")
    (tmp_path / "fadiag.yaml").write_text("audit:\n  calibration: tight.yaml\n")
    monkeypatch.chdir(tmp_path)
    for var in ("FADIAG_FORMAT", "FADIAG_BATCH_SIZE", "FADIAG_THRESHOLD", "FADIAG_CALIBRATION"):
        monkeypatch.delenv(var, raising=False)
    ck = str(EX / "resmlp_bp.pt")
    with pytest.raises(SystemExit) as ei:
        main(["audit", ck, "--batch-size", "64", "-q", "-f", "json"])
    rep = json.loads(capsys.readouterr().out)
    c = next(f for f in rep["flags"] if f["id"] == "c")
    assert rep["calibration"]["name"] == "tight" and rep["settings"]["calibration"] == "config"
    assert c["flagged"] is True and c["calibration"]["inside"] is True and ei.value.code == 1
    (tmp_path / "fadiag.yaml").write_text("format: json\n")
    with pytest.raises(SystemExit) as ei:
        main(["audit", ck, "--batch-size", "64", "-q", "-t", "stability_drift_ceiling=0.3"])
    rep = json.loads(capsys.readouterr().out)
    assert rep["calibration"]["name"] == "published"
    c = next(f for f in rep["flags"] if f["id"] == "c")
    assert c["calibration"]["why"].startswith("a threshold the user set")


def test_model_family_names():
    from types import SimpleNamespace

    from fadiag.calibration import model_family

    assert model_family("resmlp") == model_family("fadiag.models.resmlp:ResMLP") == "resmlp"
    assert model_family("transformers:GPT2LMHeadModel", SimpleNamespace(config=SimpleNamespace(model_type="gpt2"))) \
        == "gpt2"
    assert model_family("timm:vit_tiny_patch16_224") == "vit_tiny_patch16_224"
    assert model_family("my_pkg.nets:PreLN") == "PreLN"


def test_a_strict_calibration_file_restores_the_published_rule(tmp_path, run_cli):
    """The shipped GPT-2 family example crosses (c) outside its calibration: exit 0, unless out_of_calibration: flag."""
    ck = EX / "families" / "gpt2_count.pt"
    code, out, _ = run_cli(["audit", ck, "-q", "-f", "json"])
    assert code == 0 and json.loads(out)["verdict"].startswith("out of calibration: ")
    strict = tmp_path / "strict.yaml"
    strict.write_text("schema: fadiag.calibration/1\nout_of_calibration: flag\nflags: {}\n")
    code, out, _ = run_cli(["audit", ck, "--calibration", strict, "-q", "-f", "json"])
    rep = json.loads(out)
    assert code == 1 and rep["verdict"] == "needs walk-back: BP grad direction is drift-dominated"
    assert rep["calibration"]["name"] == "strict" and rep["calibration"]["out_of_calibration"] == "flag"
