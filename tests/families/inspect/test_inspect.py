"""fadiag inspect: reads without unpickling, lists tensors and feedback, counts non-finite values and fp16,
names unsafe globals without running them."""

from __future__ import annotations

import json
import os

import torch

from conftest import EXAMPLES


def test_inspect_lists_tensors_and_feedback(run_cli):
    code, out, err = run_cli(["inspect", EXAMPLES / "resmlp_dfa.pt", "--format", "json"])
    assert code == 0, err
    rep = json.loads(out)
    keys = {t["key"]: t for t in rep["tensors"]}
    assert keys["feedback"]["shape"] == [7, 10, 64]
    assert keys["model.embed.weight"]["dtype"] == "float32"
    assert rep["state_dict_key"] == "model" and rep["needs_unsafe_unpickling"] is False


def test_inspect_counts_nonfinite_and_fp16(run_cli, tmp_path):
    sd = {"w": torch.tensor([1.0, float("nan"), float("inf")]), "h": torch.ones(3, dtype=torch.float16)}
    torch.save(sd, tmp_path / "x.pt")
    code, out, err = run_cli(["inspect", tmp_path / "x.pt", "--format", "json"])
    assert code == 1
    rep = json.loads(out)
    flags = {f["id"]: f for f in rep["flags"]}
    assert flags["nonfinite"]["flagged"] and flags["nonfinite"]["value"] == 2
    assert flags["fp16"]["flagged"]


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch INSPECT_MARKER",))


def test_inspect_names_unsafe_globals_without_running_them(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"x": _Payload()}, tmp_path / "evil.pt")
    code, out, err = run_cli(["inspect", tmp_path / "evil.pt", "--format", "json"])
    assert code == 1
    rep = json.loads(out)
    assert rep["needs_unsafe_unpickling"] is True
    assert any("system" in g for g in rep["unsafe_globals"])
    assert not (tmp_path / "INSPECT_MARKER").exists()
