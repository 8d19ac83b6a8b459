"""Bad input never crashes fadiag: a fixed corpus (tests/corpus/, see make_corpus.py) plus hypothesis fuzzing.

The contract checked on every case (DESIGN.md, CLI contract): exit 2 with exactly one stderr line that
starts "fadiag: error: " and names the file (or option) and the problem; or, for damage that happens to
still parse (bit flips), a clean 0/1 whose stdout is strict JSON (no NaN). Never exit 3, never
"Traceback", each call well under 10 s, and no file written (the corpus and the working folder are
snapshotted around each call). Hypothesis runs derandomized with a handful of examples per property,
so CI is deterministic; the corpus pins the interesting cases found while writing these properties.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _budget import CPUBudgetExceeded, cpu_budget
from conftest import invoke_cli

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
BASE = CORPUS / "base"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
MARKER = "FADIAG_CORPUS_MARKER"
LIMIT_CPU_S = 10.0

FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------- helpers

def snapshot(*folders: Path) -> dict:
    out = {}
    for folder in folders:
        for p in folder.rglob("*"):
            if "__pycache__" in p.parts:
                continue
            st_ = p.stat()
            out[str(p)] = (p.is_dir(), st_.st_size, st_.st_mtime_ns)
    return out


def strict_json(text: str):
    def no_constant(c):
        raise AssertionError(f"non-finite constant {c} in JSON output")

    return json.loads(text, parse_constant=no_constant)


def run_checked(args, *, codes=(0, 1, 2), names=(), needles=(), watch=()) -> tuple:
    """Run the CLI in-process and hold it to the bad-input contract. Returns (code, out, err)."""
    watch = [Path.cwd(), CORPUS, *watch]
    before = snapshot(*watch)
    try:
        with cpu_budget(LIMIT_CPU_S):
            code, out, err = invoke_cli(args)
    except CPUBudgetExceeded:
        pytest.fail(f"{args}: over {LIMIT_CPU_S} CPU seconds: bad input must be refused up front")
    assert "Traceback" not in out and "Traceback" not in err, err
    assert code in codes, (code, err)
    if code == 2:
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        line = lines[0]
        assert line.startswith("fadiag: error: "), line
        assert not names or any(str(n) in line for n in names), (names, line)
        for n in needles:
            assert n in line, (n, line)
    else:
        strict_json(out)
    assert snapshot(*watch) == before, "a file was written"
    assert not (Path.cwd() / MARKER).exists(), "a pickled payload ran"
    return code, out, err


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load_make_corpus():
    """Import tests/corpus/make_corpus.py without writing a __pycache__ into the corpus."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    old, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = old
    return mod


def _audit_ckpt(p: Path) -> list:
    return ["audit", p, "--spec", BASE / "tiny.yaml", "-f", "json"]


# ---------------------------------------------------------------------------------------- the corpus

def _cases():
    for rel, e in sorted(MANIFEST["cases"].items()):
        marks = [pytest.mark.xfail(strict=True, reason=e["xfail"])] if "xfail" in e else []
        yield pytest.param(rel, e, id=rel, marks=marks)


@pytest.mark.parametrize("rel, entry", list(_cases()))
def test_corpus_case(rel, entry):
    p = CORPUS / rel
    role = entry["role"]
    if "runs" in entry:  # hostile/ and honest/: every run's exit code, and its stderr line or JSON output
        for run in entry["runs"]:
            args = [str(p) if a == "{file}" else str(BASE / "tiny.yaml") if a == "{spec}" else a for a in run["args"]]
            code, out, err = run_checked(args, codes=tuple(run["codes"]), names=[p])
            text = err if code == 2 else out
            for n in run["needles"]:
                assert n in text, (args, n, text[-2000:])
        return
    if role == "ckpt":
        args, names = _audit_ckpt(p), [p]
    elif role == "spec":
        args, names = ["audit", BASE / "tiny.pt", "--spec", p, "-f", "json"], [p]
        if "nope.npz" in entry["needles"]:
            names = [p.parent / "nope.npz"]
    else:
        args = ["audit", BASE / "tiny.pt", "--spec", BASE / "tiny.yaml", "--data", p, "--batches", "2",
                "--batch-size", "4", "-f", "json"]
        names = [p]
    run_checked(args, codes=tuple(entry["codes"]), names=names, needles=entry["needles"])
    if role == "ckpt":  # inspect reads the same bytes without a spec: same contract (1 = attention, e.g. NaN)
        run_checked(["inspect", p, "-f", "json"], names=[p])


def test_corpus_is_what_make_corpus_writes(tmp_path):
    """The committed corpus is reproducible from the script (byte for byte on the recorded versions)."""
    mod = load_make_corpus()
    out = tmp_path / "corpus"
    meta = mod.build(out)
    assert meta["cases"] == MANIFEST["cases"]
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(CORPUS) for p in CORPUS.rglob("*") if p.is_file()
                       and p.name != "make_corpus.py" and "__pycache__" not in p.parts)
    assert files == committed
    assert sum((CORPUS / f).stat().st_size for f in committed) < 2_000_000
    if (meta["torch"], meta["numpy"]) != (MANIFEST["torch"], MANIFEST["numpy"]):
        pytest.skip("corpus was written with other torch/numpy versions; names checked, bytes not")
    for f in files:
        assert (out / f).read_bytes() == (CORPUS / f).read_bytes(), f


# ---------------------------------------------------------------------------- checkpoint byte fuzzing

@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict:
    """The tiny checkpoint as bytes in each format (the corpus base, re-encoded)."""
    mod = load_make_corpus()
    sd = mod.tiny_state()
    return {
        "pt": (BASE / "tiny.pt").read_bytes(),
        "legacy.pt": mod.torch_bytes({"model": mod.one_storage(sd)}, legacy=True),
        "safetensors": mod.safetensors_bytes_from_state(sd),
        "npz": mod.npz_bytes({k: v.numpy() for k, v in sd.items()}),
    }


def _run_bytes(raw: bytes, suffix: str, *, codes, needles=()):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"fuzz.{suffix.split('.')[-1]}"
        p.write_bytes(raw)
        code, out, err = run_checked(_audit_ckpt(p), codes=codes, names=[p], needles=needles, watch=[Path(d)])
        run_checked(["inspect", p, "-f", "json"], names=[p], watch=[Path(d)])
        return code


@FUZZ
@given(data=st.data())
def test_truncated_checkpoint_is_refused(originals, data):
    fmt = data.draw(st.sampled_from(sorted(originals)), label="format")
    raw = originals[fmt]
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    _run_bytes(raw[:cut], fmt, codes=(2,))


@FUZZ
@given(data=st.data())
def test_bit_flipped_checkpoint_is_refused_or_clean(originals, data):
    fmt = data.draw(st.sampled_from(sorted(originals)), label="format")
    b = bytearray(originals[fmt])
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(0, 7)), min_size=1, max_size=4),
                      label="flips")
    for pos, bit in flips:
        b[pos] ^= 1 << bit
    _run_bytes(bytes(b), fmt, codes=(0, 1, 2))


_ints = st.one_of(st.integers(-10, 10**4), st.sampled_from([-(2**63), 2**31, 2**32 + 1, 2**63, 2**64 - 1, 2**70]))
_entry = st.fixed_dictionaries({}, optional={
    "dtype": st.one_of(st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "Q9", ""]),
                       st.integers()),
    "shape": st.one_of(st.lists(_ints, max_size=4), st.text(max_size=3), st.none()),
    "data_offsets": st.one_of(st.lists(_ints, min_size=0, max_size=3),
                              st.lists(st.floats(allow_nan=True), max_size=2), st.text(max_size=3)),
})


@FUZZ
@given(entries=st.dictionaries(st.text(max_size=12), st.one_of(_entry, st.integers(), st.lists(st.integers())),
                               max_size=3),
       data_len=st.integers(0, 64),
       declared=st.one_of(st.none(), _ints))
def test_safetensors_header_fuzz_is_refused(entries, data_len, declared):
    """Arbitrary headers, offsets, shapes and declared lengths: refused (nothing can match the spec)."""
    h = json.dumps(entries).encode()
    h += b" " * (-len(h) % 8)
    n = len(h) if declared is None else declared % 2**64
    _run_bytes(struct.pack("<Q", n) + h + bytes(range(data_len)), "safetensors", codes=(2,))


# ------------------------------------------------------------------------------------------- spec fuzz

_SPEC_PATHS = [
    ("model",), ("model", "arch"), ("model", "args"), ("model", "args", "width"), ("model", "args", "depth"),
    ("model", "args", "act"), ("checkpoint",), ("checkpoint", "state_dict"), ("checkpoint", "strip_prefix"),
    ("data",), ("data", "source"), ("data", "path"), ("data", "batch_size"), ("data", "batches"),
    ("data", "shuffle"), ("data", "seed"), ("audit",), ("audit", "method_name"), ("audit", "notes"),
    ("audit", "headline_acc"), ("audit", "frozen_baseline_acc"), ("audit", "thresholds"), ("audit", "growth"),
    ("credit",), ("credit", "eps"), ("credit", "etas"), ("edges",), ("relevance", "truth"), ("bogus",),
    ("data", "bogus"),
]
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 40),
                  st.sampled_from([10**9, 10**30, -(10**18)]),
                  st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10))
_value = st.recursive(_leaf, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c,
                                                                                         max_size=3)),
                      max_leaves=6)


def _base_spec() -> dict:
    s = yaml.safe_load((BASE / "tiny.yaml").read_text())
    s["data"]["path"] = str(BASE / "tiny_data.npz")
    return s


@FUZZ
@given(path=st.sampled_from(_SPEC_PATHS), value=_value)
def test_spec_value_fuzz(path, value):
    """Any value at any key of the spec: a clean run or exit 2 with one line; never a crash or a hang."""
    if path[:2] == ("model", "args") and isinstance(value, int) and not isinstance(value, bool) and value > 64:
        value = 64  # absurd model sizes are test_safety_io's business
    s = _base_spec()
    o = s
    for k in path[:-1]:
        o = o.setdefault(k, {}) if isinstance(o.get(k, {}), dict) else o
    o[path[-1]] = value
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "fuzz.yaml"
        p.write_text(yaml.safe_dump(s))
        run_checked(["audit", BASE / "tiny.pt", "--spec", p, "-f", "json"], watch=[Path(d)])


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_spec_text_fuzz_is_refused(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "fuzz.yaml"
        p.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        run_checked(["audit", BASE / "tiny.pt", "--spec", p, "-f", "json"], codes=(2,), names=[p], watch=[Path(d)])


# -------------------------------------------------------------------------------------- threshold fuzz

AUDIT_THRESHOLDS = ("g_norm_floor", "h_norm_explosion_ratio", "stability_drift_ceiling", "frozen_acc_margin_pp")
MUST_BE_POSITIVE = ("g_norm_floor", "h_norm_explosion_ratio")  # credit's g_norm_floor too


def _threshold_ok(name: str, value) -> bool:
    """The contract: a finite number, positive where the threshold is a floor or a ratio, in [-1, 1] where it
    bounds a correlation."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        return False
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    if name in ("rho_deep_floor", "stability_drift_ceiling") and not -1.0 <= v <= 1.0:
        return False  # bounds on a correlation / cosine
    if name == "frozen_acc_margin_pp" and not -100.0 <= v <= 100.0:
        return False  # percentage points
    return math.isfinite(v) and (v > 0 or name not in MUST_BE_POSITIVE)


_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                     st.sampled_from([0, -0.0, 1e-300, -1e-7, 1e308, 10**400]))


@FUZZ
@given(name=st.sampled_from(AUDIT_THRESHOLDS), value=st.one_of(_numbers, st.text(max_size=8)))
def test_threshold_flag_fuzz(name, value):
    text = repr(value) if isinstance(value, float) else str(value)
    expect_ok = _threshold_ok(name, text)
    code, _, err = run_checked(["audit", BASE / "tiny.pt", "--spec", BASE / "tiny.yaml", "-t", f"{name}={text}",
                                "-f", "json"], codes=(0, 1) if expect_ok else (2,),
                               needles=() if expect_ok else ("--threshold", name))


@FUZZ
@given(name=st.sampled_from(AUDIT_THRESHOLDS),
       value=st.one_of(_numbers, st.none(), st.booleans(), st.lists(st.integers(), max_size=2)))
def test_threshold_spec_fuzz(name, value):
    s = _base_spec()
    s["audit"]["thresholds"] = {name: value}
    expect_ok = _threshold_ok(name, value)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "thr.yaml"
        p.write_text(yaml.safe_dump(s))
        run_checked(["audit", BASE / "tiny.pt", "--spec", p, "-f", "json"], codes=(0, 1) if expect_ok else (2,),
                    names=[p], needles=() if expect_ok else (name,), watch=[Path(d)])


@FUZZ
@given(value=st.one_of(_numbers, st.text(max_size=8)))
def test_credit_threshold_flag_fuzz(value):
    text = repr(value) if isinstance(value, float) else str(value)
    expect_ok = _threshold_ok("rho_deep_floor", text)
    run_checked(["credit", BASE / "tiny.pt", "--spec", BASE / "tiny.yaml", "-t", f"rho_deep_floor={text}",
                 "-f", "json"], codes=(0, 1) if expect_ok else (2,), needles=() if expect_ok else ("rho_deep_floor",))


@pytest.mark.parametrize("cmd, item, needles", [
    ("audit", "g_norm_floor=-1", ["--threshold", "g_norm_floor", "positive"]),
    ("audit", "g_norm_floor=0", ["g_norm_floor", "positive"]),
    ("audit", "h_norm_explosion_ratio=-5", ["h_norm_explosion_ratio", "positive"]),
    ("audit", "g_norm_floor=nan", ["g_norm_floor", "finite"]),
    ("audit", "stability_drift_ceiling=inf", ["stability_drift_ceiling", "finite"]),
    ("audit", "frozen_acc_margin_pp=-inf", ["frozen_acc_margin_pp", "finite"]),
    ("audit", "frozen_acc_margin_pp=1e400", ["frozen_acc_margin_pp", "finite"]),
    ("audit", "g_norm_floor=abc", ["--threshold", "number"]),
    ("audit", "g_norm_floor=", ["--threshold", "number"]),
    ("audit", "g_norm_floor", ["--threshold", "NAME=VALUE"]),
    ("audit", "=1", ["--threshold", "NAME=VALUE"]),
    ("audit", "g_norm_flor=1", ["--threshold", "g_norm_floor"]),
    ("credit", "rho_deep_floor=nan", ["--threshold", "rho_deep_floor", "finite"]),
    ("credit", "rho_deep_floor=x", ["--threshold", "number"]),
    ("credit", "bogus=1", ["--threshold", "bogus"]),
])
def test_bad_threshold_flags(cmd, item, needles):
    run_checked([cmd, BASE / "tiny.pt", "--spec", BASE / "tiny.yaml", "-t", item, "-f", "json"], codes=(2,),
                needles=needles)


@pytest.mark.parametrize("value", ["-1", "0"])
def test_credit_g_norm_floor_must_be_positive(value):
    run_checked(["credit", BASE / "tiny.pt", "--spec", BASE / "tiny.yaml", "-t", f"g_norm_floor={value}",
                 "-f", "json"], codes=(2,), needles=("g_norm_floor", "positive"))


# ------------------------------------------------------------------------------------------- data fuzz

_X_DTYPES = ["float32", "float64", "float16", "int32", "int8", "uint8"]
_Y_DTYPES = ["int64", "int32", "uint8", "float32", "bool"]


@FUZZ
@given(n=st.sampled_from([0, 3, 8, 12]), xdt=st.sampled_from(_X_DTYPES), ydt=st.sampled_from(_Y_DTYPES),
       bad_x=st.sampled_from([None, np.nan, np.inf, -np.inf]), y_shape=st.sampled_from(["ok", "2d", "short"]),
       y_lo=st.integers(-3, 2), y_hi=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_data_fuzz(n, xdt, ydt, bad_x, y_shape, y_lo, y_hi, seed):
    """Eval data of random dtype/shape/labels/non-finite values: exit 2 exactly when it is bad, else 0/1."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 8)) * 3).astype(xdt)
    if bad_x is not None and n and x.dtype.kind == "f":
        x[rng.integers(n), rng.integers(8)] = bad_x
    lo, hi = min(y_lo, y_hi), max(y_lo, y_hi)
    y_int = rng.integers(lo, hi + 1, size=n)
    y = (y_int != 0) if ydt == "bool" else y_int.astype(ydt)
    if y_shape == "2d":
        y = np.stack([y, y], 1)
    elif y_shape == "short":
        y = y[: max(0, n - 1)]
    labels = np.asarray(y).astype(np.int64)  # uint8 labels have already wrapped -3 to 253
    bad = (
        (x.dtype.kind == "f" and not np.isfinite(x).all())
        or y_shape != "ok" or n < 8
        or (labels.size and (labels.min() < 0 or labels.max() >= 3))
    )
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "data.npz"
        np.savez(p, x=x, y=y)
        run_checked(["audit", BASE / "tiny.pt", "--spec", BASE / "tiny.yaml", "--data", p, "--batches", "2",
                     "--batch-size", "4", "-f", "json"], codes=(2,) if bad else (0, 1), names=[p], watch=[Path(d)])


def test_object_array_data_is_never_unpickled(tmp_path):
    """--data with a pickled object array (the corpus one would touch MARKER) and the same via the spec's data.path."""
    p = CORPUS / "data" / "x_object.npz"
    s = _base_spec()
    s["data"]["path"] = str(p)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(s))
    for cmd in ("audit", "credit"):
        run_checked([cmd, BASE / "tiny.pt", "--spec", tmp_path / "s.yaml", "--batches", "2", "--batch-size", "4",
                     "-f", "json"] if cmd == "audit" else
                    [cmd, BASE / "tiny.pt", "--spec", tmp_path / "s.yaml", "--batch-size", "4", "-f", "json"],
                    codes=(2,), names=[p], needles=["pickle"])


@pytest.mark.parametrize("cmd", ["audit", "credit"])
def test_data_with_wrong_feature_count(cmd):
    p = CORPUS / "data" / "x_wrong_features.npz"
    extra = ["--batches", "2", "--batch-size", "4"] if cmd == "audit" else ["--batch-size", "4"]
    run_checked([cmd, BASE / "tiny.pt", "--spec", BASE / "tiny.yaml", "--data", p, *extra, "-f", "json"],
                codes=(2,), names=[p])


# ------------------------------------------------------------------------------- other contract gaps

@pytest.mark.parametrize("suffix", ["safetensors", "pt"])
def test_safetensors_with_header_length_128_is_read_as_safetensors(tmp_path, suffix):
    from safetensors.torch import save

    sd = torch.load(BASE / "tiny.pt", weights_only=True)["model"]
    for pad in range(0, 600):
        raw = save(sd, metadata={"pad": "x" * pad})
        if struct.unpack("<Q", raw[:8])[0] % 256 == 0x80:
            break
    p = tmp_path / f"st128.{suffix}"
    p.write_bytes(raw)
    code, out, _ = run_checked(["inspect", p, "-f", "json"], codes=(0,))
    assert strict_json(out)["checkpoint"]["format"] == "safetensors"
    run_checked(_audit_ckpt(p), codes=(0, 1))


def test_inspect_float8_tensor(tmp_path):
    p = tmp_path / "f8.safetensors"
    h = json.dumps({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}).encode()
    h += b" " * (-len(h) % 8)
    p.write_bytes(struct.pack("<Q", len(h)) + h + b"\x01\x02\x03\x04")
    run_checked(["inspect", p, "-f", "json"], codes=(0, 1, 2), names=[p])


def test_out_of_range_option_is_one_line():
    run_checked(["audit", BASE / "tiny.pt", "--batches", "0", "-f", "json"], codes=(2,), needles=["--batches"])


def test_credit_huge_seed_is_bad_input():
    run_checked(["credit", BASE / "tiny.pt", "--spec", BASE / "tiny.yaml", "--seed", str(10**23), "-f", "json"],
                codes=(0, 1, 2), needles=["--seed"])


def test_relevance_spec_without_data_section(tmp_path):
    from fadiag.models.multihead import MultiHeadLearner

    torch.manual_seed(0)
    m = MultiHeadLearner(n_features=4, hidden=[4], n_heads=2)
    torch.save({"model": m.state_dict()}, tmp_path / "mh.pt")
    (tmp_path / "mh.yaml").write_text(yaml.safe_dump(
        {"model": {"arch": "multihead", "args": {"n_features": 4, "hidden": [4], "n_heads": 2}}}))
    run_checked(["relevance", tmp_path / "mh.pt", "-f", "json"], codes=(0, 1))


def test_arch_that_is_not_a_module_class_is_bad_input(tmp_path):
    s = _base_spec()
    s["model"] = {"arch": "builtins:dict", "args": {}}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(s))
    run_checked(["audit", BASE / "tiny.pt", "--spec", p, "-f", "json"], codes=(2,), names=[p], needles=["model.arch"])
