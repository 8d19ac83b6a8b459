"""fadiag trajectory (docs/trajectory.md): the step of each checkpoint, first_flagged against a brute-force reading
of its definition (docs/science.md §8), and on a real DFA run (the shipped recipe saving every 125 steps) the
per-step numbers equal separate `fadiag audit` runs, the first flagged steps are named, and a Monitor at the
same steps wrote the same records."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from fadiag.errors import InputError
from fadiag.families.trajectory import steps as S
from fadiag.families.trajectory.first import DEAD_BLOCK_RATIO, first_flagged

EVERY, EPOCHS = 125, 4  # steps 0..500: (a) fires first at 375 on this recipe


# ------------------------------------------------------------------------------------------- steps

@pytest.mark.parametrize("content,want", [
    ({"step": 7, "global_step": 9}, (7, "checkpoint:step")),
    ({"global_step": torch.tensor(12), "epoch": 3}, (12, "checkpoint:global_step")),
    ({"iter_num": 5000}, (5000, "checkpoint:iter_num")),
    ({"epoch": 2}, (2, "checkpoint:epoch")),
    ({"meta": {"step": 40}}, (40, "checkpoint:meta.step")),
    ({"step": True, "model": {}}, (None, None)),
    ({"step": 1.5}, (None, None)),
    ({"step": -1}, (None, None)),
    ([1, 2], (None, None)),
])
def test_step_from_content(content, want):
    assert S.from_content(content) == want


@pytest.mark.parametrize("name,want", [
    ("epoch=0-step=100.ckpt", 100), ("checkpoint-250", 250), ("step_000375.pt", 375), ("model_iter12.pt", 12),
    ("run3_final_40.safetensors", 40), ("final.pt", None),
])
def test_step_from_name(name, want):
    assert S.from_name(f"/x/{name}")[0] == want


def test_run_steps_orders_and_refuses(tmp_path):
    for step, name in ((20, "b.pt"), (5, "z.pt"), (10, "a.pt")):
        torch.save({"model": {"w": torch.zeros(1)}, "step": step}, tmp_path / name)
    (tmp_path / "optimizer.pt").write_bytes(b"")  # never a model checkpoint
    (tmp_path / "notes.txt").write_text("x")
    rows = S.run_steps([tmp_path])
    assert [(s, p.split("/")[-1]) for s, _, p in rows] == [(5, "z.pt"), (10, "a.pt"), (20, "b.pt")]
    torch.save({"model": {}, "step": 10}, tmp_path / "dup.pt")
    with pytest.raises(InputError, match="two checkpoints at step 10"):
        S.run_steps([tmp_path])
    torch.save({"model": {}}, tmp_path / "final.pt")
    with pytest.raises(InputError, match="cannot tell"):
        S.step_of(str(tmp_path / "final.pt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no checkpoints"):
        S.run_steps([empty])


def test_hf_folder_step_from_trainer_state(tmp_path):
    d = tmp_path / "checkpoint-30"
    d.mkdir()
    (d / "config.json").write_text("{}")
    assert S.step_of(str(d)) == (30, "file name")
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 31}))
    assert S.step_of(str(d)) == (31, "trainer_state.json:global_step")
    assert S.expand([tmp_path]) == [str(d)]


# ------------------------------------------------------------------------------------------- first_flagged

def _rec(step, h, g, flags, u=None):
    return {"step": step, "residual_norms": h, "bp_grad_norms": g, "block_update_norms": u or [1.0] * (len(h) - 1),
            "growth_mode": "ratio_to_h0", "stability_layer": 1, "checkpoint": {"path": f"s{step}"},
            "flags": [{"id": i, "name": i, "flagged": v, "value": None, "threshold": None} for i, v in flags.items()]}


def _reference(points, th):
    """The definition, read literally: at the first step where the flag fires, the layers past the criterion;
    for each, the earliest step s such that it is past at every step from s to the first flagged step."""
    def past(fid, p):
        h, g = p["residual_norms"], p["bp_grad_norms"]
        if fid == "a":
            return {l for l in range(1, len(h)) if h[l] > th["h_norm_explosion_ratio"] * h[0]}
        if fid == "b":
            return {l for l in range(len(g)) if g[l] < th["g_norm_floor"]}
        return {l for l in range(len(h) - 1) if p["block_update_norms"][l] <= DEAD_BLOCK_RATIO * h[l]}
    out = {}
    for fid in ("a", "b", "f"):
        hits = [i for i, p in enumerate(points) if any(f["id"] == fid and f["flagged"] for f in p["flags"])]
        if not hits:
            out[fid] = None
            continue
        k = hits[0]
        starts = {l: min(s for s in range(k + 1) if all(l in past(fid, points[j]) for j in range(s, k + 1)))
                  for l in past(fid, points[k])}
        out[fid] = (points[k]["step"], min(starts, key=lambda l: (starts[l], l)) if starts else None)
    return out


def test_first_flagged_matches_the_definition():
    th = {"h_norm_explosion_ratio": 10.0, "g_norm_floor": 1e-3}
    g = torch.Generator().manual_seed(3)
    for trial in range(40):
        pts = []
        for s in range(6):
            h = [1.0] + [float(v) for v in torch.rand(4, generator=g) * 14]
            gr = [float(v) for v in torch.rand(5, generator=g) * 3e-3]
            u = [float(v) if v > 0.2 else 0.0 for v in torch.rand(4, generator=g)]
            past_dead = all(x <= DEAD_BLOCK_RATIO * y for x, y in zip(u, h))
            pts.append(_rec(s * 10, h, gr, {"a": max(h[1:]) > 10, "b": gr[-1] < 1e-3, "f": past_dead}, u))
        got = first_flagged(pts, th)
        want = _reference(pts, th)
        for fid in ("a", "b", "f"):
            assert (None if got[fid] is None else (got[fid]["step"], got[fid]["layer"])) == want[fid], (trial, fid)
    # a layer past the criterion before the flag fires is where it started (b: layer 1 sinks before g_L)
    pts = [_rec(0, [1, 1, 1], [1, 1, 1], {"b": False}), _rec(5, [1, 1, 1], [1, 1e-4, 1], {"b": False}),
           _rec(9, [1, 1, 1], [1e-4, 1e-4, 1e-4], {"b": True})]
    hit = first_flagged(pts, th)["b"]
    assert (hit["step"], hit["layer"], hit["layers"], hit["checkpoint"]) == (9, 1, [0, 1, 2], "s9")
    assert [p["first_flagged"] for p in pts] == [[], [], [{"id": "b", "name": "b", "layer": 1}]]


def test_dead_ratio_is_the_protocols():
    from fadiag.diagnostics.protocol import DEAD_BLOCK_RATIO as protocol

    assert DEAD_BLOCK_RATIO == protocol


# ------------------------------------------------------------------------------------------- a real DFA run

@pytest.fixture(scope="module")
def dfa_run(tmp_path_factory):
    from fadiag.examples.train_trajectory import train_run

    out = tmp_path_factory.mktemp("dfa_run")
    r = train_run(out, EVERY, EPOCHS, monitor=True)
    assert r["steps"] == [0, 125, 250, 375, 500]
    return out


def test_trajectory_equals_separate_audits_and_names_first_steps(dfa_run, run_cli):
    code, out, errtext = run_cli(["trajectory", str(dfa_run), "--spec", str(dfa_run / "run.yaml"), "-f", "json"])
    assert code == 1, errtext
    rep = json.loads(out)
    assert rep["schema"] == "fadiag.trajectory/1" and rep["steps"] == [0, 125, 250, 375, 500]
    assert {p["step_source"] for p in rep["points"]} == {"checkpoint:step"}
    first = rep["first_flagged"]
    assert (first["a"]["step"], first["a"]["layer"]) == (375, 1)
    assert first["a"]["checkpoint"].endswith("step_000375.pt")
    assert first["e"] is None and first["f"] is None
    for p in rep["points"]:  # each step: the numbers of a separate `fadiag audit` of its checkpoint
        code, a_out, _ = run_cli(["audit", p["checkpoint"]["path"], "--spec", str(dfa_run / "run.yaml"), "-f", "json"])
        audit = json.loads(a_out)
        for k in ("residual_norms", "bp_grad_norms", "block_update_norms", "growth", "cross_batch_stability",
                  "headline_acc", "verdict"):
            assert p[k] == audit[k], (p["step"], k)
        assert p["flags"] == [{k: f[k] for k in ("id", "name", "flagged", "value", "threshold")}
                              for f in audit["flags"]]
        assert p["checkpoint"]["sha256"] == audit["checkpoint"]["sha256"]
    fired = [f for f in rep["flags"] if f["flagged"]]
    assert {f["id"]: f["value"] for f in fired}["a"] == 375.0


def test_monitor_jsonl_equals_trajectory(dfa_run, run_cli):
    code, out, _ = run_cli(["trajectory", str(dfa_run), "--spec", str(dfa_run / "run.yaml"), "-f", "json"])
    assert_same_records(json.loads(out)["points"], dfa_run / "monitor.jsonl")


def assert_same_records(points, jsonl):
    """A callback's JSONL and fadiag trajectory's records: equal except where each came from."""
    recs = [json.loads(l) for l in jsonl.read_text().splitlines()]
    assert [r["step"] for r in recs] == [p["step"] for p in points]
    for r, p in zip(recs, points):
        assert r["checkpoint"] is None and r["step_source"] == "monitor"
        assert {k: v for k, v in r.items() if k not in ("checkpoint", "step_source")} == \
            {k: v for k, v in p.items() if k not in ("checkpoint", "step_source")}


def test_formats_resume_and_plot(dfa_run, run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    j = tmp_path / "t.json"
    journal = tmp_path / "journal.jsonl"
    code, _, errtext = run_cli(["trajectory", str(dfa_run), "--spec", str(dfa_run / "run.yaml"), "-o", str(j),
                                "--resume", str(journal), "--plot", str(tmp_path / "t.png")])
    assert code == 1 and (tmp_path / "t.png").stat().st_size > 10_000, errtext
    assert len(journal.read_text().splitlines()) == 5
    code, again, errtext = run_cli(["trajectory", str(dfa_run), "--spec", str(dfa_run / "run.yaml"), "-f", "json",
                                    "--resume", str(journal)])
    assert errtext.count("skipped") == 5 and json.loads(again)["points"] == json.loads(j.read_text())["points"]
    code, table, _ = run_cli(["report", str(j), "-f", "table"])
    assert "first flagged" in table and "375" in table
    code, md, _ = run_cli(["report", str(j), "-f", "markdown"])
    assert "| (a) | residual stream exploded | 375 | 1 |" in md


def test_bad_input_is_exit_2(dfa_run, run_cli, tmp_path):
    code, _, errtext = run_cli(["trajectory", str(tmp_path / "nope")])
    assert code == 2 and "no such file" in errtext and "Traceback" not in errtext
    ck = sorted(dfa_run.glob("step_*.pt"))
    code, _, errtext = run_cli(["trajectory", str(ck[0]), str(ck[0]), "--spec", str(dfa_run / "run.yaml")])
    assert code == 2 and "two checkpoints at step 0" in errtext


def test_steps_audited_differently_are_refused():
    from fadiag.families.trajectory.body import build_report

    a = {"data": {"source": "x.npz", "batches": 8}, "thresholds": {"g_norm_floor": 1e-7}, "flags": []}
    b = dict(a, data={"source": "y.npz", "batches": 8})
    rows = [(0, "file name", "s0.pt"), (5, "file name", "s5.pt")]
    with pytest.raises(InputError, match="different data"):
        build_report(rows, [a, b])
    rep = build_report(rows, [a, dict(a)])
    assert rep.steps == [0, 5] and rep.first_flagged == {} and rep.verdict == "trustworthy"


@pytest.mark.slow
def test_jobs_2_gives_the_same_report(dfa_run, run_cli):
    args = ["trajectory", str(dfa_run), "--spec", str(dfa_run / "run.yaml"), "-f", "json", "-q"]
    one, two = run_cli(args)[1], run_cli([*args, "--jobs", "2"])[1]
    assert json.loads(one)["points"] == json.loads(two)["points"]
