"""What the report and the table say about how the model was read: the outcome column, a skipped check in the
verdict line, the "read as" line; and fadiag's own digits data fitting its default batches and training the
frozen baseline on its own train split."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from _reports import audit_fixture


def _digits_case(tmp_path, data=None):
    pytest.importorskip("sklearn.datasets")
    from fadiag.models.resmlp import ResMLP

    torch.manual_seed(0)
    m = ResMLP(64, 8, 2, 10)
    torch.save({"model": m.state_dict()}, tmp_path / "d.pt")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({
        "model": {"arch": "resmlp", "args": {"in_dim": 64, "width": 8, "depth": 2, "n_classes": 10}},
        "data": {"source": "digits", **(data or {})}}))
    return tmp_path / "d.pt"


def test_digits_default_batches_fit_the_split_and_say_so(tmp_path, run_cli):
    ck = _digits_case(tmp_path)
    code, out, err = run_cli(["audit", ck, "-f", "json", "-q"])
    assert code in (0, 1), err
    d = json.loads(out)["data"]
    assert (d["batches"], d["batch_size"]) == (8, 45) and "calibrated at batch size 128" in d["batch_size_note"]
    code, out, err = run_cli(["audit", ck, "-f", "table", "-q"])
    assert "calibrated at batch size 128" in " ".join(out.split())
    # a size the user asks for is taken as asked (and too large is exit 2, as for any data)
    code, _, err = run_cli(["audit", ck, "--batch-size", "128", "-q"])
    assert code == 2 and "fewer than batches x batch_size" in err


def test_frozen_baseline_train_uses_fadiags_digits_train_split(tmp_path, run_cli):
    ck = _digits_case(tmp_path, {"batch_size": 90, "batches": 4})
    code, out, err = run_cli(["audit", ck, "--frozen-baseline", "train", "-f", "json", "-q"])
    assert code in (0, 1), err
    rep = json.loads(out)
    assert "digits train split" in rep["frozen_baseline_source"]
    assert rep["frozen_baseline_acc"] > 0.5  # a trained head on frozen random blocks, not chance (0.1)
    assert rep["flags"][3]["flagged"] is not None


def test_table_outcome_column_skipped_verdict_and_read_as_line():
    from fadiag.render.table import render
    from fadiag.families.audit.report import AuditReport

    d = audit_fixture("bp")
    for f in d["flags"]:
        f["flagged"] = False if f["id"] != "d" else None
        if f["id"] == "d":
            f["value"], f["detail"] = None, "skipped: no frozen-blocks baseline"
    d["verdict"] = "trustworthy"
    d["data"] = {**(d.get("data") or {}), "stream": {"read_as": "blocks blocks.0..2 (spec); residual inside: "
                                                                "measured on the first batch"}}
    text = " ".join(render([AuditReport.from_dict(d)], width=160).split())
    assert "deep blocks fail" not in text  # a skipped or passing row never reads as the failure
    assert "not checked: no frozen-blocks baseline" in text
    assert "verdict: trustworthy, with (d) skipped" in text
    assert "read as: blocks blocks.0..2 (spec); residual inside" in text
    d["flags"][3].update(flagged=False, value=21.77, detail="0.90 vs frozen 0.68: +21.77 pp")
    text = " ".join(render([AuditReport.from_dict(d)], width=160).split())
    assert "deep blocks beat the frozen-random baseline: 0.90 vs frozen 0.68" in text and "skipped" not in text
