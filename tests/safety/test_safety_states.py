"""Degenerate model states never pass, and every report is reproducible.

Non-finite and dead states (NaN/Inf in weights, an all-zero embedding, dead blocks with zero fc2 weight
and bias) are run through audit AND credit (and relevance on a multi-head learner with NaN in a weight):
each must flag explicitly (exit 1, verdict never "trustworthy"/"ok"), and the JSON must hold null where a
number is non-finite: it is parsed with a ``parse_constant`` that raises on NaN/Infinity.

Determinism: the same command twice (audit, credit, relevance, inspect; json) gives byte-identical stdout,
in-process and across processes with different PYTHONHASHSEED. Seeds are recorded in every report that
uses randomness (credit: params.seed; audit: data.seed), and a different seed changes credit's ρ.

Fields excluded by design, so byte-identity holds without masking anything: reports carry NO timing
(no elapsed/duration/timestamp/date) and NO host fields (no hostname/user/pid/cwd); "settings" records
only the provenance of each non-default option ("flag" | "env" | "config"), never a time or a machine.
The one path-dependent field is checkpoint.path / spec / data.source, which is what the user passed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from _budget import HANG_GUARD_S
import torch
import yaml


def strict_json(text: str):
    def no_constant(c):
        raise AssertionError(f"non-finite constant {c} in JSON output")

    return json.loads(text, parse_constant=no_constant)


def _nulls(obj) -> int:
    if obj is None:
        return 1
    if isinstance(obj, dict):
        return sum(_nulls(v) for v in obj.values())
    if isinstance(obj, list):
        return sum(_nulls(v) for v in obj)
    return 0


def flags_of(rep: dict) -> dict:
    return {f["id"]: f for f in rep["flags"]}


# ------------------------------------------------------------------------------------- state editors

def _set(key, index, value):
    def edit(sd):
        sd[key].view(-1)[index] = value
    return edit


def _zero_embed(sd):
    sd["embed.weight"].zero_()
    sd["embed.bias"].zero_()


def _dead_blocks(sd):
    for i in range(3):
        sd[f"blocks.{i}.fc2.weight"].zero_()
        sd[f"blocks.{i}.fc2.bias"].zero_()


NONFINITE = {
    "nan_block_weight": _set("blocks.1.fc1.weight", 0, float("nan")),
    "inf_block_weight": _set("blocks.1.fc2.weight", 3, float("inf")),
    "nan_embed_bias": _set("embed.bias", 0, float("nan")),
    "neg_inf_out_ln": _set("out_ln.weight", 0, float("-inf")),
    "nan_head": _set("out_head.weight", 5, float("nan")),
}


@pytest.mark.parametrize("case", list(NONFINITE))
def test_nonfinite_weights_flag_audit_and_credit(run_cli, tiny_resmlp_ckpt, case):
    files = tiny_resmlp_ckpt(edit=NONFINITE[case])
    code, out, err = run_cli(["audit", files.ckpt, "-f", "json"])
    assert code == 1, err
    rep = strict_json(out)
    assert rep["verdict"] != "trustworthy" and rep["verdict"].startswith("needs walk-back")
    e = flags_of(rep)["e"]
    assert e["flagged"] is True and rep["nonfinite_count"] > 0 and e["value"] == rep["nonfinite_count"]
    assert "non-finite" in rep["verdict"]
    assert _nulls(rep["residual_norms"]) + _nulls(rep["bp_grad_norms"]) + _nulls(rep["cross_batch_stability"]) > 0
    assert "trustworthy" not in err

    code, out, err = run_cli(["credit", files.ckpt, "-f", "json"])
    assert code == 1, err
    rep = strict_json(out)
    assert rep["verdict"] != "trustworthy" and flags_of(rep)["e"]["flagged"] is True
    assert flags_of(rep)["e"]["value"] > 0
    assert _nulls(rep["layers"]) > 0  # the non-finite per-layer numbers are null, not NaN

    code, out, _ = run_cli(["inspect", files.ckpt, "-f", "json"])
    assert code == 1 and flags_of(strict_json(out))["nonfinite"]["flagged"] is True


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_nonfinite_weights_flag_in_every_format(run_cli, tiny_resmlp_ckpt, fmt):
    files = tiny_resmlp_ckpt(edit=NONFINITE["nan_block_weight"], fmt=fmt)
    for cmd, flag in (("audit", "e"), ("credit", "e")):
        code, out, err = run_cli([cmd, files.ckpt, "-f", "json"])
        assert code == 1, err
        assert flags_of(strict_json(out))[flag]["flagged"] is True


def test_nonfinite_jsonl_and_exit_zero(run_cli, tiny_resmlp_ckpt):
    """jsonl is strict JSON too; --exit-zero changes the exit code, never the verdict."""
    files = tiny_resmlp_ckpt(edit=NONFINITE["inf_block_weight"])
    code, out, _ = run_cli(["audit", files.ckpt, files.ckpt, "-f", "jsonl", "--exit-zero"])
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all(strict_json(l)["verdict"].startswith("needs walk-back") for l in lines)


def test_zero_embedding_flags_audit(run_cli, tiny_resmlp_ckpt):
    """h_0 = 0: the ratio to ‖h_0‖ is undefined -> (a) is flagged with a null value, never passed."""
    files = tiny_resmlp_ckpt(edit=_zero_embed)
    code, out, err = run_cli(["audit", files.ckpt, "-f", "json"])
    assert code == 1, err
    rep = strict_json(out)
    assert rep["verdict"] != "trustworthy"
    a = flags_of(rep)["a"]
    assert a["flagged"] is True and a["value"] is None
    assert rep["residual_norms"][0] == 0.0


def test_zero_embedding_flags_credit(run_cli, tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(edit=_zero_embed)
    code, out, _ = run_cli(["credit", files.ckpt, "-f", "json"])
    rep = strict_json(out)
    assert code == 1 and rep["verdict"] != "trustworthy"


def test_dead_blocks_flag_audit(run_cli, tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(edit=_dead_blocks)
    code, out, _ = run_cli(["audit", files.ckpt, "-f", "json"])
    rep = strict_json(out)
    assert rep["residual_norms"][0] == pytest.approx(rep["residual_norms"][-1])  # the state really is dead
    assert code == 1 and rep["verdict"] != "trustworthy"


def test_dead_blocks_flag_credit(run_cli, tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(edit=_dead_blocks)
    code, out, _ = run_cli(["credit", files.ckpt, "-f", "json"])
    assert code == 1 and strict_json(out)["verdict"] != "trustworthy"


# -------------------------------------------------------------------------------- multi-head learner

@pytest.fixture
def multihead(tmp_path):
    """factory(edit=None) -> path of a tiny multihead checkpoint (4 features, hidden [4], 2 heads) + spec + data."""
    from fadiag.models.multihead import MultiHeadLearner

    torch.manual_seed(0)
    m = MultiHeadLearner(n_features=4, hidden=[4], n_heads=2, normalize=True)
    g = torch.Generator().manual_seed(0)
    np.savez(tmp_path / "mh_data.npz", x=torch.randn(32, 4, generator=g).numpy(),
             y=torch.randn(32, 2, generator=g).numpy())
    (tmp_path / "mh.yaml").write_text(yaml.safe_dump({
        "model": {"arch": "multihead", "args": {"n_features": 4, "hidden": [4], "n_heads": 2}},
        "data": {"source": "npz", "path": "mh_data.npz", "batch_size": 8, "batches": 4}}))

    def make(edit=None):
        sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
        if edit:
            edit(sd)
        torch.save({"model": sd}, tmp_path / "mh.pt")
        return tmp_path / "mh.pt"

    return make


@pytest.mark.parametrize("key, value", [("trunk.0.weight", float("nan")), ("heads.weight", float("nan")),
                                        ("heads.weight", float("inf")), ("norm_var", float("nan"))])
@pytest.mark.parametrize("sens", [False, True], ids=["state", "sensitivity"])
def test_nonfinite_multihead_flags_relevance(run_cli, multihead, key, value, sens):
    ck = multihead(_set(key, 0, value))
    code, out, err = run_cli(["relevance", ck, "-f", "json", *(["--sensitivity"] if sens else [])])
    assert code == 1, err
    rep = strict_json(out)
    assert rep["verdict"].startswith("needs walk-back: ") and flags_of(rep)["nonfinite"]["flagged"] is True
    assert _nulls(rep["per_head"]) > 0


@pytest.mark.parametrize("key", ["heads.bias", "trunk.0.bias"])
def test_nonfinite_multihead_bias_flags_relevance(run_cli, multihead, key):
    ck = multihead(_set(key, 0, float("nan")))
    code, out, _ = run_cli(["relevance", ck, "-f", "json", "--sensitivity"])
    assert code == 1 and strict_json(out)["verdict"].startswith("needs walk-back: ")


def test_clean_multihead_is_ok(run_cli, multihead):
    """The control: the same learner without edits passes (so the flags above are caused by the edits)."""
    code, out, err = run_cli(["relevance", multihead(), "-f", "json", "--sensitivity"])
    assert code == 0, err
    assert strict_json(out)["verdict"] == "trustworthy"


def test_clean_tiny_resmlp_passes(run_cli, tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt()
    for cmd, ok in (("audit", "trustworthy"), ("credit", "trustworthy")):
        code, out, err = run_cli([cmd, files.ckpt, "-f", "json"])
        assert code == 0 and strict_json(out)["verdict"] == ok, err


# -------------------------------------------------------------------------------------- determinism

FORBIDDEN_KEY = re.compile(r"(^|_)(time|timestamp|date|datetime|elapsed|duration|seconds|host|hostname|node|user|"
                           r"pid|cwd|started|finished|now)($|_)", re.I)


def _keys(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{prefix}.{k}" if prefix else k, k
            yield from _keys(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v, prefix)


def _no_time_or_host(rep: dict, text: str) -> None:
    bad = [path for path, k in _keys(rep) if FORBIDDEN_KEY.search(str(k))
           and not path.startswith(("per_head", "trunk", "sensitivity", "layers", "drift_per_tensor", "tensors"))]
    assert not bad, bad
    settings = rep.get("settings", {})
    assert isinstance(settings, dict) and set(settings.values()) <= {"flag", "env", "config"}, settings
    host = socket.gethostname()
    if len(host) >= 6:
        assert host not in text


@pytest.fixture
def det_inputs(tiny_resmlp_ckpt, multihead):
    files = tiny_resmlp_ckpt(spec_overrides={"data": {"shuffle": True}}, n_rows=96)
    return files, multihead()


def _commands(files, mh):
    return {
        "audit": ["audit", files.ckpt, "-f", "json", "--seed", "5"],
        "credit": ["credit", files.ckpt, "-f", "json", "--seed", "5", "--n-dirs", "8"],
        "credit_random": ["credit", files.ckpt, "-f", "json", "--signal", "random", "--n-dirs", "8"],
        "relevance": ["relevance", mh, "-f", "json", "--sensitivity", "--observation", "2"],
        "inspect": ["inspect", files.ckpt, "-f", "json"],
    }


def test_same_command_twice_is_byte_identical(run_cli, det_inputs):
    files, mh = det_inputs
    for name, args in _commands(files, mh).items():
        c1, o1, _ = run_cli(args)
        c2, o2, _ = run_cli(args)
        assert c1 == c2 and c1 in (0, 1), name
        assert o1 == o2, name
        _no_time_or_host(strict_json(o1), o1)


def test_seeds_are_recorded_and_matter(run_cli, det_inputs):
    files, _ = det_inputs
    _, out, _ = run_cli(["audit", files.ckpt, "-f", "json", "--seed", "5"])
    rep = strict_json(out)
    assert rep["data"]["seed"] == 5 and rep["data"]["shuffle"] is True and rep["settings"]["seed"] == "flag"
    _, out, _ = run_cli(["audit", files.ckpt, "-f", "json"])
    assert strict_json(out)["data"]["seed"] == 0  # the spec's default seed, still recorded

    reps = {}
    for seed in (5, 6):
        _, out, _ = run_cli(["credit", files.ckpt, "-f", "json", "--seed", str(seed), "--n-dirs", "8"])
        reps[seed] = strict_json(out)
        assert reps[seed]["params"]["seed"] == seed
    assert [r["rho"] for r in reps[5]["layers"]] != [r["rho"] for r in reps[6]["layers"]]  # ρ's directions are seeded
    _, out, _ = run_cli(["credit", files.ckpt, "-f", "json"])
    assert strict_json(out)["params"]["seed"] == 0
    # shuffled audit batches depend on the seed too
    _, a5, _ = run_cli(["audit", files.ckpt, "-f", "json", "--seed", "5"])
    _, a6, _ = run_cli(["audit", files.ckpt, "-f", "json", "--seed", "6"])
    assert strict_json(a5)["cross_batch_stability"] != strict_json(a6)["cross_batch_stability"]


def test_env_provenance_is_recorded(run_cli, det_inputs):
    files, _ = det_inputs
    code, out, _ = run_cli(["credit", files.ckpt, "-f", "json", "--n-dirs", "8"], env={"FADIAG_SEED": "5"})
    rep = strict_json(out)
    assert rep["params"]["seed"] == 5 and rep["settings"]["seed"] == "env" and rep["settings"]["n_dirs"] == "flag"


def test_identical_across_processes(run_cli, det_inputs):
    """Two fresh interpreters with different hash seeds print the same bytes as the in-process run (no set or
    dict order, address or thread-count leaks). credit with --seed uses every random draw fadiag makes."""
    files, mh = det_inputs
    args = _commands(files, mh)["credit"]
    _, ref, _ = run_cli(args)
    procs = []
    for hs, threads in (("1", "1"), ("2", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hs, "OMP_NUM_THREADS": threads}
        procs.append(subprocess.Popen([sys.executable, "-m", "fadiag", *map(str, args)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env, cwd=files.dir))
    for p, threads in zip(procs, (1, 2)):
        o, e = p.communicate(timeout=HANG_GUARD_S)
        assert p.returncode in (0, 1), e
        # the report records the thread count it ran with (docs/scale.md); everything else is the same bytes
        assert json.loads(o).pop("runtime") == {"threads": threads}
        assert re.sub(r'"runtime": \{[^}]*\}', "", o) == re.sub(r'"runtime": \{[^}]*\}', "", ref)
