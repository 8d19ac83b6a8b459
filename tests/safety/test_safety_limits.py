"""Hostile files, part two (issue 13): no code without an opt-in, bounded readers, true refusal reasons,
no exit 3 on bad input, escaped names.

- The downloaded-folder attack (model.pt + model.yaml naming "helper:Net" + helper.py): no command imports
  helper.py without --trust-code; with it, it works and the report records ``trusted_code: true``.
- Resource bounds, measured by what they mean: exit codes and one stderr line under a 2 GiB address-space cap past the imported libraries
  (a real process per batch of files), opcodes scanned, visits made, storage elements touched.
- The scanner and the classifier against references (pickletools, torch's own allow-list).
- Exit 2 (never 3) for state-dict keys pointing at the wrong thing, symlink loops, FIFOs; ANSI names escaped.
The attack files come from tests/corpus/make_corpus.py (committed ones in tests/corpus/hostile/, the big ones
written here by build_big).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from test_safety_fuzz import load_make_corpus
from test_safety_hostile import one_line_refusal as one_line

CORPUS = REPO / "tests" / "corpus"
BASE = CORPUS / "base"


def make_corpus():
    return load_make_corpus()


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """The small runtime families (no 1 GiB write): data_pkl_100mib, data_pkl_ops, downloaded/, ANSI name,
    torchscript."""
    return make_corpus().build_big(tmp_path_factory.mktemp("big"), huge=False)


# ------------------------------------------------------------------------ the downloaded-folder attack

@pytest.fixture
def downloaded(big, tmp_path):
    """A fresh copy of downloaded/ (the marker is per copy); helper is forgotten afterwards."""
    import shutil

    d = tmp_path / "downloaded"
    shutil.copytree(big["downloaded"], d)
    yield d
    sys.modules.pop("helper", None)


@pytest.mark.parametrize("cmd", ["audit", "credit", "edges", "relevance"])
def test_downloaded_folder_runs_no_code_without_trust_code(run_cli, downloaded, cmd):
    code, out, err = run_cli([cmd, downloaded / "model.pt", "-f", "json"])
    one_line(code, out, err, "'helper'", "--trust-code", "model.arch")
    assert out == ""
    assert not (downloaded / "HELPER_RAN").exists(), f"{cmd} imported helper.py"


def test_inspect_never_imports_the_folder(run_cli, downloaded):
    code, out, err = run_cli(["inspect", downloaded / "model.pt", "-f", "json"])
    assert code == 0, err
    assert not (downloaded / "HELPER_RAN").exists()


def test_trust_code_runs_it_and_is_recorded(run_cli, downloaded):
    code, out, err = run_cli(["audit", downloaded / "model.pt", "-f", "json", "--trust-code"])
    assert code in (0, 1), err
    assert (downloaded / "HELPER_RAN").exists()
    ck = json.loads(out)["checkpoint"]
    assert ck["trusted_code"] is True and ck["trusted"] is False


def test_explicit_spec_keeps_todays_behaviour(run_cli, downloaded):
    code, out, err = run_cli(["audit", downloaded / "model.pt", "--spec", downloaded / "model.yaml", "-f", "json"])
    assert code in (0, 1), err
    assert (downloaded / "HELPER_RAN").exists()
    assert "trusted_code" not in json.loads(out)["checkpoint"]


def test_sidecar_value_arch_is_gated_too(run_cli, tiny_resmlp_ckpt, tmp_path):
    files = tiny_resmlp_ckpt(spec_overrides={"credit": {"value_arch": "helper:V"}})
    one_line(*run_cli(["credit", files.ckpt, "-f", "json"]), "credit.value_arch", "'helper'", "--trust-code")
    # the built-in value net needs no flag
    files = tiny_resmlp_ckpt(spec_overrides={"credit": {"value_arch": "fadiag.models.value:ValueMLP"}})
    code, _, err = run_cli(["audit", files.ckpt, "-f", "json"])
    assert code in (0, 1), err


# ----------------------------------------------------------------------- bounded under a 2 GiB address-space cap

_DRIVER = r"""
import io, json, sys, contextlib, resource
import torch  # its shared libraries are mapped before the cap (a CUDA build of torch maps > 2 GiB of them)
from fadiag.cli import main
vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
cap = vm + int(sys.argv[2])  # what the run may map on top of the interpreter, torch and fadiag
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
res = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 3
        except BaseException as e:
            code, _ = 99, err.write(f"ESCAPED {type(e).__name__}: {e}")
    res.append([args, code, err.getvalue()])
print(json.dumps(res))
"""


def run_bounded(runs: list, limit_bytes: int = 2 * 1024**3) -> list:
    """Run fadiag.cli.main on each argument list in ONE process whose address space may grow by at most
    ``limit_bytes`` past what the interpreter, torch and fadiag map at import (RLIMIT_AS); [(args, code, stderr)]."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc for the address-space cap")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    r = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps([[str(a) for a in run] for run in runs]),
                        str(limit_bytes)],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _check_bounded(results, expect: dict):
    for args, code, err in results:
        name = Path(args[1]).name
        assert "Traceback" not in err and "ESCAPED" not in err, (name, err[-2000:])
        assert code in expect[(args[0], name)][0], (args, code, err)
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1, (name, err)
            for n in expect[(args[0], name)][1]:
                assert n in lines[0], (name, n, lines[0])


def test_hostile_files_are_bounded_under_2gib(big):
    """laughs, nested lists, zero-stride views, opcode streams, a zip bomb, a 100 MiB data.pkl: each is a
    clean report or one exit-2 line naming the limit, in a process that may not map more than 2 GiB."""
    h = CORPUS / "hostile"
    cases = {
        ("inspect", "laughs.pt"): ((1,), ()),
        ("audit", "laughs.pt"): ((2,), ("state dict",)),
        ("inspect", "nested_lists.pt"): ((1,), ()),
        ("inspect", "zero_stride_2e15.pt"): ((0,), ()),
        ("inspect", "zero_stride_nan_2e20.pt"): ((1,), ()),
        ("inspect", "extra_pkl_65mib.pt"): ((1,), ()),
        ("audit", "extra_pkl_65mib.pt"): ((2,), ("tampered",)),
        ("inspect", "zip_bomb_extra_member.pt"): ((2,), ("zip bomb",)),
        ("inspect", "bytearray_2e40.pt"): ((2,), ("memory",)),
        ("inspect", "data_pkl_100mib.pt"): ((2,), ("67,108,864-byte pickle limit",)),
        ("audit", "data_pkl_100mib.pt"): ((2,), ("67,108,864-byte pickle limit",)),
    }
    runs = []
    for cmd, name in cases:
        f = big[name] if name in big else h / name
        runs.append([cmd, f, "-f", "json"] + (["--spec", BASE / "tiny.yaml"] if cmd == "audit" else []))
    _check_bounded(run_bounded(runs), cases)


@pytest.mark.slow
def test_big_hostile_files_are_bounded_under_2gib(tmp_path):
    """The issue's own sizes: a member inflating to 1 GiB, 100 MiB of opcodes, 4.2 M opcodes in data.pkl."""
    paths = make_corpus().build_big(tmp_path)
    cases = {
        ("inspect", "member_1gib.pt"): ((2,), ("zip bomb",)),
        ("audit", "member_1gib.pt"): ((2,), ("zip bomb",)),
        ("inspect", "opcodes_100mib.pt"): ((1,), ()),
        ("audit", "opcodes_100mib.pt"): ((2,), ("tampered",)),
        ("inspect", "data_pkl_ops.pt"): ((2,), ("4,000,000 pickle opcodes",)),
        ("audit", "data_pkl_ops.pt"): ((2,), ("4,000,000 pickle opcodes",)),
    }
    runs = [[cmd, paths[name], "-f", "json"] + (["--spec", BASE / "tiny.yaml"] if cmd == "audit" else [])
            for cmd, name in cases]
    _check_bounded(run_bounded(runs), cases)


def test_opcode_budget_names_the_limit(run_cli, big, monkeypatch):
    """The opcode limit, scaled down so the test reads few opcodes: refused with the limit named, and the
    scan stops at the limit (it does not read the rest)."""
    import fadiag.checkpoint as ck

    monkeypatch.setattr(ck, "MAX_PICKLE_OPS", 10_000)
    one_line(*run_cli(["inspect", big["data_pkl_ops.pt"], "-f", "json"]), "over 10,000 pickle opcodes")
    with pytest.raises(ck._ScanBudget):
        ck.scan_pickles(make_corpus().ops_stream(50_000), max_ops=10_000)
    sc = ck.scan_pickles(make_corpus().ops_stream(9_000), max_ops=10_000)
    assert sc.error is None and sc.pickles == 1 and 9_000 <= sc.ops <= 9_010


def test_inspect_walk_stops_at_its_visit_budget(run_cli, tmp_path, monkeypatch):
    import fadiag.families.inspect.api as ins

    monkeypatch.setattr(ins, "MAX_VISITS", 50)
    torch.save({"model": {f"w{i}": torch.ones(2) for i in range(100)}}, tmp_path / "many.pt")
    code, out, err = run_cli(["inspect", tmp_path / "many.pt", "-f", "json"])
    assert code == 1, err
    rep = json.loads(out)
    assert rep["visits"] == 51 and rep["n_tensors"] < 50
    assert {f["id"]: f for f in rep["flags"]}["unchecked"]["flagged"] is True
    assert any(e["type"] == "(walk stopped)" for e in rep["other_entries"])


def test_laughs_cost_is_visits_not_leaves():
    """x = [x] * 10, 9 levels: 10^9 leaves, but the walk makes at most MAX_VISITS visits."""
    import fadiag.families.inspect.api as ins

    w = ins._Walk()
    w.run(make_corpus().laughs())
    assert w.stopped and w.visits <= ins.MAX_VISITS + 1


# ---------------------------------------------------------------------------- non-finite counts, chunked

def _reference_nonfinite(t) -> int:
    """float64 loop over every element of the view."""
    flat = t.detach().to(torch.float64).contiguous().reshape(-1).tolist()
    return sum(1 for v in flat if v != v or v in (float("inf"), float("-inf")))


def _reference_storage_span(t) -> int:
    """float64 loop over the storage elements from the view's first to its last element."""
    base = torch.as_strided(t, (t.untyped_storage().nbytes() // t.element_size(),), (1,), 0)
    lo = t.storage_offset()
    span = 1 + sum((sz - 1) * st for sz, st in zip(t.shape, t.stride()) if sz > 1)
    return _reference_nonfinite(base[lo:lo + span])


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_nonfinite_count_matches_a_float64_loop(monkeypatch, chunk):
    import fadiag.families.inspect.api as ins

    monkeypatch.setattr(ins, "CHUNK", chunk)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 10, 4, generator=g)
    base[torch.rand(base.shape, generator=g) < 0.15] = float("nan")
    base[0, 0, 0], base[5, 9, 3] = float("inf"), float("-inf")
    views = {
        "contiguous": base, "transposed": base.transpose(0, 2), "step": base[:, ::3, 1:], "row": base[2],
        "scalar": base[1, 2, 3], "empty": base[:0], "bf16": base.to(torch.bfloat16)[::2],
        "half": base.half().permute(1, 0, 2), "float64": base.double()[1:5, 2:7],
    }
    for name, t in views.items():
        n, note = ins._Counter().count(t)
        assert n == _reference_nonfinite(t), name
        assert note is None, name
    # overlapping views are counted over the storage they read, never expanded
    expanded = base[3, 4, :1].expand(2**15, 2**15)
    overl = torch.as_strided(base, (5, 7), (3, 2))
    for name, t in {"stride0": expanded, "overlap": overl}.items():
        c = ins._Counter()
        n, note = c.count(t)
        assert n == _reference_storage_span(t), name
        assert "overlapping view" in note
    c = ins._Counter()
    c.count(expanded)
    assert ins.MAX_TOUCH - c.left == 1  # one storage element read for 2^30 elements of view


def test_element_budget_is_per_file(monkeypatch):
    import fadiag.families.inspect.api as ins

    monkeypatch.setattr(ins, "MAX_TOUCH", 100)
    c = ins._Counter(budget=100)
    assert c.count(torch.ones(60))[0] == 0
    n, note = c.count(torch.ones(60))
    assert n is None and "budget" in note
    t = torch.full((10,), float("nan"))
    assert c.count(t)[0] == 10 and c.count(t)[0] == 10 and c.left == 30  # a tensor reached twice: read once


def test_inspect_lists_meta_sparse_nested_and_bf16(run_cli, tmp_path):
    i = torch.tensor([[0, 1], [1, 0]])
    obj = {"meta": torch.empty(3, 4, device="meta"),
           "coo": torch.sparse_coo_tensor(i, torch.tensor([1.0, float("nan")]), (2, 2)),
           "nt": torch.nested.nested_tensor([torch.ones(2), torch.tensor([float("inf"), 1.0, 2.0])]),
           "bf": torch.ones(2, dtype=torch.bfloat16)}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj["csr"] = obj["coo"].to_sparse_csr()
        torch.save(obj, tmp_path / "odd.pt")
    code, out, err = run_cli(["inspect", tmp_path / "odd.pt", "-f", "json"])
    assert code == 1, err
    rep = json.loads(out)
    t = {x["key"]: x for x in rep["tensors"]}
    assert t["meta"]["nonfinite"] is None and "meta" in t["meta"]["note"]
    assert t["coo"]["nonfinite"] == 1 and t["csr"]["nonfinite"] == 1
    assert t["nt"]["nonfinite"] == 1 and t["nt"]["shape"] == [2] and t["nt"]["numel"] == 5
    flags = {f["id"]: f for f in rep["flags"]}
    assert flags["fp16"]["flagged"] and "bfloat16" in flags["fp16"]["detail"]
    assert flags["unchecked"]["flagged"] and "meta" in flags["unchecked"]["detail"]
    code, out, err = run_cli(["inspect", tmp_path / "odd.pt", "-f", "table"])
    assert code == 1 and "Traceback" not in err


# ----------------------------------------------------------------------- the scanner and the classifier

def _reference_globals(data: bytes) -> set:
    """GLOBAL/INST args from pickletools; STACK_GLOBAL resolved by simulating the stack of strings."""
    out, stack, memo = set(), [], {}
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name in ("GLOBAL", "INST"):
            out.add(arg.replace(" ", "."))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            stack.append(arg)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(arg))
        elif op.name == "STACK_GLOBAL":
            out.add(f"{stack[-2]}.{stack[-1]}")
            stack.append(None)
        elif op.name not in ("FRAME", "PROTO", "BINPUT", "LONG_BINPUT", "PUT", "STOP"):
            stack.append(None)
    return out


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_scanner_finds_what_pickletools_finds(protocol):
    import argparse

    from fadiag.checkpoint import scan_pickles

    objs = [OrderedDict(a=1), {"x": [1, 2.5, "s", b"b"]}, argparse.Namespace(lr=0.1), np.float32(2),
            np.arange(3), Path("a/b"), {1, 2}, complex(1, 2), torch.Size([2, 3])]
    for obj in objs:
        data = pickle.dumps(obj, protocol=protocol)
        sc = scan_pickles(data)
        assert set(sc.globals) == _reference_globals(data), (protocol, obj)
        assert sc.error is None and sc.pickles == 1 and sc.end == len(data)


def test_scanner_on_broken_streams():
    from fadiag.checkpoint import scan_pickles

    data = pickle.dumps({"a": [1, 2, 3]}, protocol=2)
    assert "truncated" in scan_pickles(data[:-3]).error
    assert "unknown pickle opcode" in scan_pickles(b"\x80\x02\xff.").error
    from fadiag.checkpoint import _ScanBudget

    with pytest.raises(_ScanBudget, match="bytes"):  # pickles longer than the bytes we may read
        scan_pickles(data[:-3], more_follows=True)


@pytest.mark.parametrize("name, cls", [
    ("posix.system", "dangerous"), ("os.system", "dangerous"), ("subprocess.Popen", "dangerous"),
    ("builtins.eval", "dangerous"), ("__builtin__.getattr", "dangerous"), ("torch.load", "dangerous"),
    ("runpy._run_code", "dangerous"), ("torch.serialization.load", "dangerous"),
    ("__builtin__.set", "allowed"), ("builtins.set", "allowed"), ("_codecs.encode", "allowed"),
    ("torch.ByteStorage", "allowed"), ("collections.OrderedDict", "allowed"),
    ("torch._utils._rebuild_tensor_v2", "allowed"), ("numpy._core.multiarray.scalar", "allowed"),
    ("numpy.core.multiarray._reconstruct", "allowed"), ("argparse.Namespace", "allowed"),
    ("numpy.dtypes.Float32DType", "allowed"),
    ("tests._payloads.CheckpointBox", "unknown"), ("torch.nn.modules.linear.Linear", "unknown"),
    ("pathlib.PosixPath", "unknown"),
])
def test_globals_are_classed(name, cls):
    from fadiag.checkpoint import classify_global

    assert classify_global(name) == cls


def test_classes_agree_with_torchs_own_allow_list():
    """Every name torch's weights-only unpickler admits by default is "allowed" (none is called dangerous)."""
    from torch import _weights_only_unpickler as wu

    from fadiag.checkpoint import classify_global

    names = list(wu._get_allowed_globals())
    assert names and all(classify_global(n) == "allowed" for n in names)


def test_no_refusal_names_only_allowed_globals(run_cli):
    """The honest protocol-4 save: the reason is torch's (FRAME), no global is blamed, inspect classes each."""
    p = CORPUS / "honest" / "protocol4.pt"
    line = one_line(*run_cli(["audit", p, "--spec", BASE / "tiny.yaml", "-f", "json"]), "FRAME")
    assert "refusing to unpickle" not in line and "can run code" not in line
    code, out, _ = run_cli(["inspect", p, "-f", "json"])
    rep = json.loads(out)
    assert code == 1 and rep["unsafe_globals"] == []
    assert {g["class"] for g in rep["globals"]} == {"allowed by torch"}


def test_inspect_classes_dangerous_and_unknown(run_cli, tmp_path):
    from _payloads import CheckpointBox, RunsShellOnLoad

    torch.save({"a": RunsShellOnLoad("touch X"), "b": CheckpointBox()}, tmp_path / "mixed.pt")
    code, out, _ = run_cli(["inspect", tmp_path / "mixed.pt", "-f", "json"])
    g = {x["name"]: x["class"] for x in json.loads(out)["globals"]}
    assert code == 1 and g["posix.system"] == "dangerous" and g["_payloads.CheckpointBox"] == "unknown"
    assert not (tmp_path / "X").exists()


# ------------------------------------------------------------------------------- honest odd files

def test_torchscript_is_recognised_and_read_under_trust(run_cli, big, tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt()
    ts = big["torchscript.pt"]
    one_line(*run_cli(["audit", ts, "--spec", files.spec, "-f", "json"]), "TorchScript", "--trust-checkpoint")
    code, out, err = run_cli(["audit", ts, "--spec", BASE / "tiny.yaml", "-f", "json", "--trust-checkpoint"])
    assert code in (0, 1), err
    assert json.loads(out)["checkpoint"]["format"] == "torchscript"
    code, out, _ = run_cli(["inspect", ts, "-f", "json"])
    assert code == 1 and json.loads(out)["checkpoint"]["format"] == "torchscript"


def test_npz_keeps_0d_arrays_and_skips_strings(tmp_path):
    from fadiag.checkpoint import read_checkpoint

    np.savez(tmp_path / "a.npz", w=np.ones((2, 3), np.float32), epoch=np.array(7), names=np.array(["x", "y"]))
    raw = read_checkpoint(tmp_path / "a.npz")
    assert raw.content["epoch"].shape == () and int(raw.content["epoch"]) == 7
    assert set(raw.content) == {"w", "epoch"}
    assert raw.describe()["notes"] == ["skipped 1 non-numeric array(s): names (<U1)"]


# ------------------------------------------------------------------------------ bad input: exit 2, not 3

@pytest.mark.parametrize("target, needle", [("lst", "points at a list"), ("vec", "points at a Tensor"),
                                            ("byidx", "non-string keys")])
def test_state_dict_key_pointing_at_the_wrong_thing(run_cli, tiny_resmlp_ckpt, target, needle):
    files = tiny_resmlp_ckpt(spec_overrides={"checkpoint": {"state_dict": target}},
                             extra={"lst": [1, 2], "vec": torch.ones(3), "byidx": {0: torch.ones(2)}})
    one_line(*run_cli(["audit", files.ckpt, "-f", "json"]), needle, str(files.ckpt))


def test_symlink_loop_is_bad_input(run_cli, tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.symlink_to(b)
    b.symlink_to(a)
    for cmd in (["audit", a], ["inspect", a], ["audit", BASE / "tiny.pt", "--spec", a]):
        one_line(*run_cli([*cmd, "-f", "json"]), "symlink loop")


@pytest.mark.parametrize("opt", ["--spec", "--data"])
def test_fifo_input_is_not_a_regular_file(run_cli, tmp_path, opt):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    one_line(*run_cli(["audit", BASE / "tiny.pt", "--spec", BASE / "tiny.yaml", opt, fifo, "-f", "json"]),
             "not a regular file", str(fifo))


# --------------------------------------------------------------------------------------- ANSI in names

def test_ansi_escapes_in_a_file_name_print_escaped(run_cli, big):
    p = big["ansi"]
    code, out, err = run_cli(["audit", p, "--spec", BASE / "tiny.yaml", "-f", "json"])
    assert code in (0, 1), err
    assert "\x1b" not in err and "\\x1b[2K" in err
    assert json.loads(out)["checkpoint"]["path"] == str(p)  # JSON keeps the exact name, escaped by JSON
    for fmt in ("table", "markdown", "github", "junit"):
        code, out, err = run_cli(["audit", p, "--spec", BASE / "tiny.yaml", "-f", fmt])
        assert "\x1b" not in out and "\x1b" not in err, fmt
    code, out, err = run_cli(["inspect", p, "-f", "table"])
    assert "\x1b" not in out and "\\x1b[8m" in out
    bad = p.with_name("missing\x1b[31m.pt")
    line = one_line(*run_cli(["audit", bad, "-f", "json"]))
    assert "\x1b" not in line and "\\x1b[31m" in line


def test_rich_markup_in_a_name_is_shown_not_parsed(run_cli, tmp_path):
    p = tmp_path / "x[red]y[bold]z.pt"
    torch.save({"model": {"w[/]": torch.ones(2)}}, p)
    code, out, err = run_cli(["inspect", p, "-f", "table"])
    assert code == 0, err
    assert "x[red]y[bold]z.pt" in out.replace("\n", "") and "w[/]" in out


def test_c1_controls_in_json_are_escaped_losslessly():
    from fadiag.text import escape_json_text

    s = json.dumps({"p": "a\x9b31mb\u202e"}, ensure_ascii=False)
    t = escape_json_text(s)
    assert "\x9b" not in t and "\u202e" not in t and json.loads(t) == {"p": "a\x9b31mb\u202e"}
