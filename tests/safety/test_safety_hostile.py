"""Hostile checkpoints are refused, never run (DESIGN.md, Safety).

Every payload here is hand-assembled pickle bytecode spliced into an otherwise valid checkpoint (a real
tiny state dict, a valid sidecar spec), so that the payload is the file's only problem. Were it ever
unpickled, it would create ``<tmp>/MARKER`` (``touch``, or Python writing the file): each test asserts
the marker never appears. Payloads: os.system, subprocess.Popen / check_output, builtins.eval / exec,
a getattr chain (``getattr(__import__('builtins'), 'eval')(...)``), torch's own loaders (torch.load and
torch.serialization.load with the plain ``pickle`` module, i.e. weights_only off), each in a torch zip
file and in the legacy (non-zip) format; plus polyglots (zip that is both npz-like and torch, a
safetensors header followed by a pickle, suffixes that lie).

Commands: audit, credit and relevance refuse (exit 2, one stderr line naming the offending global);
inspect reports the globals (exit 1) without loading them. ``--trust-checkpoint`` is exercised ONLY with
the benign ``CheckpointBox`` (a dict subclass): no test ever passes it a payload.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _budget import HANG_GUARD_S
import torch
import yaml

from _payloads import CheckpointBox, RunsShellOnLoad
from conftest import REPO

SENTINEL = "FADIAG_PAYLOAD_SENTINEL"


# --------------------------------------------------------------------------- pickle bytecode assembly

def _glob(module: str, name: str) -> bytes:
    """GLOBAL opcode (protocol 0-3): push module.name."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _stack_glob(module: str, name: str) -> bytes:
    """STACK_GLOBAL (protocol 4+): push two strings, then resolve module.name."""
    return _str(module) + _str(name) + b"\x93"


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _call(fn: bytes, *args: bytes) -> bytes:
    """fn(*args) via REDUCE: MARK args TUPLE REDUCE."""
    return fn + b"(" + b"".join(args) + b"tR"


def _list(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"l"


def payloads(marker: Path) -> dict:
    """name -> (pickle bytes that push ONE object and create ``marker`` if run, the global to name)."""
    m = str(marker)
    touch_py = f"open({m!r}, 'w').close()"
    evil_inner = marker.parent / "inner_evil.pt"  # what the torch.load payloads would load (unsafely)
    torch.save({"x": RunsShellOnLoad(f"touch {m}")}, evil_inner)
    return {
        "os.system": (_call(_glob("os", "system"), _str(f"touch {m}")), "os.system"),
        "subprocess.Popen": (_call(_glob("subprocess", "Popen"), _list(_str("touch"), _str(m))), "subprocess.Popen"),
        "subprocess.check_output": (_call(_glob("subprocess", "check_output"), _list(_str("touch"), _str(m))),
                                    "subprocess.check_output"),
        "builtins.eval": (_call(_glob("builtins", "eval"), _str(touch_py)), "eval"),
        "builtins.exec": (_call(_glob("builtins", "exec"), _str(touch_py)), "exec"),
        # getattr(__import__('builtins'), 'eval')(code): no dangerous name appears as a GLOBAL itself.
        "getattr_chain": (_call(_call(_glob("builtins", "getattr"), _call(_glob("builtins", "__import__"),
                                                                          _str("builtins")), _str("eval")),
                                _str(touch_py)), "getattr"),
        # torch.load(inner, None, pickle): an explicit pickle_module turns weights_only off inside the payload.
        "torch.load": (_call(_glob("torch", "load"), _str(str(evil_inner)), b"N",
                             _glob("torch.serialization", "pickle")), "torch.load"),
        "torch.serialization.load": (_call(_glob("torch.serialization", "load"), _str(str(evil_inner)), b"N",
                                           _glob("torch.serialization", "pickle")), "torch.serialization.load"),
    }


# ------------------------------------------------------------------------------- hostile file writers

def _sentinel_bytes() -> bytes:
    return _str(SENTINEL)


def _splice(pkl: bytes, payload: bytes) -> bytes:
    sb = _sentinel_bytes()
    assert pkl.count(sb) == 1, "sentinel not found exactly once in the pickle stream"
    return pkl.replace(sb, payload)


def write_hostile(path: Path, payload: bytes, *, legacy: bool = False, state_dict: dict | None = None) -> Path:
    """torch.save {"model": state_dict, "hook": SENTINEL}, then swap the sentinel string for ``payload``."""
    obj = {"model": state_dict if state_dict is not None else {"w": torch.zeros(2)}, "hook": SENTINEL}
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    raw = buf.getvalue()
    if legacy:
        path.write_bytes(_splice(raw, payload))
        return path
    with zipfile.ZipFile(io.BytesIO(raw)) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = _splice(data, payload)
            zout.writestr(info.filename, data)
    return path


def _torch_zip_entries(payload: bytes) -> list:
    """[(name, bytes)] of a torch zip whose data.pkl is {"hook": payload}."""
    buf = io.BytesIO()
    torch.save({"hook": SENTINEL}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return [(n, _splice(z.read(n), payload) if n.endswith("/data.pkl") else z.read(n)) for n in z.namelist()]


def _npy_bytes(arr) -> bytes:
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=True)
    return b.getvalue()


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture
def env(tmp_path, monkeypatch, tiny_resmlp_ckpt):
    """A valid tiny checkpoint folder (sidecar spec + data); cwd = tmp_path; MARKER path; payloads."""
    monkeypatch.chdir(tmp_path)
    files = tiny_resmlp_ckpt(name="evil")
    marker = tmp_path / "MARKER"
    return files, marker, payloads(marker)


def _assert_never_ran(marker: Path) -> None:
    assert not marker.exists(), "a payload RAN"
    assert not (REPO / "MARKER").exists()


def one_line_refusal(code, out, err, *needles) -> str:
    assert code == 2, (code, out, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _cmd_args(cmd: str, ckpt: Path) -> list:
    return {"audit": ["audit", ckpt, "-f", "json"], "credit": ["credit", ckpt, "-f", "json"],
            "relevance": ["relevance", ckpt, "-f", "json"]}[cmd]


PAYLOAD_NAMES = ["os.system", "subprocess.Popen", "subprocess.check_output", "builtins.eval", "builtins.exec",
                 "getattr_chain", "torch.load", "torch.serialization.load"]


# ------------------------------------------------------------------------------- refusals, every command

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_payload_refused_by_audit_credit_relevance_and_reported_by_inspect(run_cli, env, name, legacy):
    files, marker, pl = env
    payload, expect = pl[name]
    write_hostile(files.ckpt, payload, legacy=legacy, state_dict=files.state_dict)
    for cmd in ("audit", "credit", "relevance"):
        line = one_line_refusal(*run_cli(_cmd_args(cmd, files.ckpt)), "refusing to unpickle", "--trust-checkpoint",
                                str(files.ckpt))
        assert expect in line, (cmd, line)
        _assert_never_ran(marker)

    code, out, err = run_cli(["inspect", files.ckpt, "-f", "json"])
    assert code == 1, err
    assert "Traceback" not in err
    rep = json.loads(out)
    assert rep["needs_unsafe_unpickling"] is True and rep["checkpoint"]["trusted"] is False
    assert any(expect in g for g in rep["unsafe_globals"]), rep["unsafe_globals"]
    assert rep["tensors"] == [] and rep["verdict"] == "needs walk-back: needs arbitrary unpickling"
    unsafe = {f["id"]: f for f in rep["flags"]}["unsafe"]
    assert unsafe["flagged"] is True
    _assert_never_ran(marker)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_payload_in_init_or_tensors_file_is_refused(run_cli, env, legacy):
    """credit reads two more checkpoints (--init, --tensors): they are untrusted too."""
    files, marker, pl = env
    evil = write_hostile(files.dir / "aux.pt", pl["os.system"][0], legacy=legacy)
    one_line_refusal(*run_cli(["credit", files.ckpt, "--init", evil, "-f", "json"]), "refusing to unpickle",
                     "os.system")
    one_line_refusal(*run_cli(["credit", files.ckpt, "--signal", "tensors", "--tensors", evil, "-f", "json"]),
                     "refusing to unpickle", "os.system")
    _assert_never_ran(marker)


def test_payload_as_data_file_is_refused(run_cli, env):
    files, marker, pl = env
    evil = write_hostile(files.dir / "evil_data.pt", pl["builtins.exec"][0])
    code, out, err = run_cli(["audit", files.ckpt, "--data", evil, "-f", "json"])
    one_line_refusal(code, out, err, str(evil))
    _assert_never_ran(marker)


def test_payload_refused_in_a_real_process_for_each_command(env):
    """Belt and braces: a real interpreter, no CliRunner; exit 2, one line, the marker never appears."""
    files, marker, pl = env
    write_hostile(files.ckpt, pl["subprocess.Popen"][0], state_dict=files.state_dict)
    for cmd in ("audit", "inspect"):
        r = subprocess.run([sys.executable, "-m", "fadiag", cmd, str(files.ckpt), "-f", "json"], capture_output=True,
                           text=True, cwd=files.dir, timeout=HANG_GUARD_S)
        assert "Traceback" not in r.stderr
        if cmd == "audit":
            one_line_refusal(r.returncode, r.stdout, r.stderr, "subprocess.Popen")
        else:
            assert r.returncode == 1 and "subprocess.Popen" in json.loads(r.stdout)["unsafe_globals"]
    _assert_never_ran(marker)


# --- other opcodes: STACK_GLOBAL (protocol 4+) and INST (protocol 0) ----------------------------------

def _p4_bytes(marker):
    return _call(_stack_glob("os", "system"), _str(f"touch {marker}"))


def _inst_bytes(marker):
    # INST (protocol 0): MARK args 'i' module\nname\n -> calls module.name(*args), no GLOBAL opcode at all.
    return b"(" + _str(f"touch {marker}") + b"ios\nsystem\n"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", ["stack_global_p4", "inst_opcode"])
def test_other_opcodes_are_refused_named_and_never_run(run_cli, env, kind, legacy):
    files, marker, _ = env
    payload = (_p4_bytes if kind == "stack_global_p4" else _inst_bytes)(marker)
    write_hostile(files.ckpt, payload, legacy=legacy, state_dict=files.state_dict)
    for cmd in ("audit", "credit", "relevance"):
        one_line_refusal(*run_cli(_cmd_args(cmd, files.ckpt)), str(files.ckpt), "refusing to unpickle", "system")
    code, out, _ = run_cli(["inspect", files.ckpt, "-f", "json"])
    assert code == 1 and any("system" in g for g in json.loads(out)["unsafe_globals"])
    _assert_never_ran(marker)


def test_protocol4_refusal_is_one_line_in_a_real_process(tmp_path):
    marker = tmp_path / "MARKER"
    p = tmp_path / "evil.pt"
    torch.save({"x": RunsShellOnLoad(f"touch {marker}")}, p, pickle_protocol=4)
    r = subprocess.run([sys.executable, "-m", "fadiag", "audit", str(p), "-f", "json"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=HANG_GUARD_S)
    assert not marker.exists()
    one_line_refusal(r.returncode, r.stdout, r.stderr)


# -------------------------------------------------------------------------------------------- polyglots

def test_polyglot_zip_npz_entries_plus_data_pkl(run_cli, env):
    """A zip holding .npy arrays AND a torch data.pkl is treated as torch (never as a plain npz): refused."""
    files, marker, pl = env
    payload, expect = pl["builtins.exec"]
    entries = _torch_zip_entries(payload)
    prefix = entries[0][0].split("/")[0]
    x_npy = _npy_bytes(np.zeros(3, np.float32))
    for where, name in (("inside", f"{prefix}/x.npy"), ("root", "x.npy")):
        p = files.dir / f"poly_{where}.npz"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr(name, x_npy)
            for n, b in entries:
                z.writestr(n, b)
        line = one_line_refusal(*run_cli(["audit", p, "--spec", files.spec, "-f", "json"]), str(p))
        if where == "inside":  # torch can parse it: the global is named
            assert "refusing to unpickle" in line and expect in line
        code, out, err = run_cli(["inspect", p, "-f", "json"])
        assert code in (1, 2) and "Traceback" not in err
        if code == 1:
            assert json.loads(out)["needs_unsafe_unpickling"] is True
        _assert_never_ran(marker)


def test_polyglot_npz_with_pickled_object_array(run_cli, env):
    """An npz whose array is a pickled object array (that would run code): refused, never unpickled."""
    files, marker, _ = env
    for suffix in ("npz", "pt"):  # and renamed .pt: the suffix lies, the content decides
        p = files.dir / f"objarr.{suffix}"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("embed.weight.npy", _npy_bytes(np.array([RunsShellOnLoad(f"touch {marker}")], dtype=object)))
        line = one_line_refusal(*run_cli(["audit", p, "--spec", files.spec, "-f", "json"]), str(p))
        assert "pickle" in line
        code, out, err = run_cli(["inspect", p, "-f", "json"])
        assert code == 1 and json.loads(out)["needs_unsafe_unpickling"] is True
        _assert_never_ran(marker)


def test_npz_object_array_names_the_global(run_cli, env):
    files, marker, _ = env
    p = files.dir / "objarr.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("embed.weight.npy", _npy_bytes(np.array([RunsShellOnLoad(f"touch {marker}")], dtype=object)))
    one_line_refusal(*run_cli(["audit", p, "--spec", files.spec, "-f", "json"]), "system")
    _assert_never_ran(marker)


@pytest.mark.parametrize("suffix", ["safetensors", "pt"])
def test_polyglot_safetensors_header_then_pickle(run_cli, env, suffix):
    """A safetensors header whose data region is a pickle: read as bytes (a uint8 tensor), never unpickled."""
    files, marker, pl = env
    pk = b"\x80\x02}" + _str("hook") + pl["os.system"][0] + b"s."
    hdr = json.dumps({"embed.weight": {"dtype": "U8", "shape": [len(pk)], "data_offsets": [0, len(pk)]}}).encode()
    hdr += b" " * (-len(hdr) % 8)
    assert len(hdr) % 256 != 0x80  # keep the first byte off the pickle PROTO opcode (see test_safety_fuzz)
    p = files.dir / f"poly.{suffix}"
    p.write_bytes(struct.pack("<Q", len(hdr)) + hdr + pk)
    one_line_refusal(*run_cli(["audit", p, "--spec", files.spec, "-f", "json"]), str(p))
    code, out, err = run_cli(["inspect", p, "-f", "json"])
    assert code == 0, err
    rep = json.loads(out)
    assert rep["checkpoint"]["format"] == "safetensors" and rep["needs_unsafe_unpickling"] is False
    assert rep["tensors"][0]["dtype"] == "uint8"
    # ... and a safetensors header with a pickle appended past the declared data: corrupt, not unpickled
    q = files.dir / f"poly_tail.{suffix}"
    q.write_bytes(struct.pack("<Q", len(hdr)) + hdr + pk + pk)
    one_line_refusal(*run_cli(["audit", q, "--spec", files.spec, "-f", "json"]), str(q))
    _assert_never_ran(marker)


def test_polyglot_legacy_pickle_with_safetensors_tail(run_cli, env):
    """A legacy pickle payload followed by safetensors-looking bytes: the pickle is what is refused."""
    files, marker, pl = env
    p = write_hostile(files.dir / "poly_tail.pt", pl["os.system"][0], legacy=True)
    hdr = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    p.write_bytes(p.read_bytes() + struct.pack("<Q", len(hdr)) + hdr + b"\0" * 4)
    line = one_line_refusal(*run_cli(["audit", p, "--spec", files.spec, "-f", "json"]), str(p))
    assert "refusing to unpickle" in line and "os.system" in line
    _assert_never_ran(marker)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_hostile_torch_file_named_safetensors_is_refused(run_cli, env, legacy):
    """Named .safetensors, a torch pickle is refused (exit 2, one line) and never run, whatever path reads it."""
    files, marker, pl = env
    p = write_hostile(files.dir / "evil.safetensors", pl["os.system"][0], legacy=legacy, state_dict=files.state_dict)
    for cmd in ("audit", "credit", "relevance"):
        one_line_refusal(*run_cli([cmd, p, "--spec", files.spec, "-f", "json"]), str(p))
    code, _, err = run_cli(["inspect", p, "-f", "json"])
    assert code in (1, 2) and "Traceback" not in err
    _assert_never_ran(marker)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_file_named_safetensors_is_read_by_content(run_cli, env, legacy):
    files, marker, pl = env
    p = write_hostile(files.dir / "evil.safetensors", pl["os.system"][0], legacy=legacy, state_dict=files.state_dict)
    one_line_refusal(*run_cli(["audit", p, "--spec", files.spec, "-f", "json"]), "refusing to unpickle", "os.system")
    benign = files.dir / "benign.safetensors"
    torch.save({"model": files.state_dict}, benign, _use_new_zipfile_serialization=not legacy)
    code, out, err = run_cli(["audit", benign, "--spec", files.spec, "-f", "json"])
    assert code in (0, 1), err
    _assert_never_ran(marker)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_hostile_pt_renamed_npz_and_safetensors(run_cli, env, legacy):
    files, marker, pl = env
    payload, expect = pl["subprocess.check_output"]
    for suffix in ("npz", "bin", ""):
        p = write_hostile(files.dir / (f"evil_renamed.{suffix}" if suffix else "evil_renamed"), payload,
                          legacy=legacy, state_dict=files.state_dict)
        line = one_line_refusal(*run_cli(["audit", p, "--spec", files.spec, "-f", "json"]), "refusing to unpickle")
        assert expect in line
        code, out, _ = run_cli(["inspect", p, "-f", "json"])
        assert code == 1 and any(expect in g for g in json.loads(out)["unsafe_globals"])
    _assert_never_ran(marker)


def test_benign_npz_renamed_pt_is_read_as_npz(run_cli, tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(fmt="npz")
    p = files.ckpt.with_name("renamed.pt")
    p.write_bytes(files.ckpt.read_bytes())
    code, out, err = run_cli(["audit", p, "--spec", files.spec, "-f", "json"])
    assert code in (0, 1), err
    assert json.loads(out)["checkpoint"]["format"] == "npz"


# --------------------------------------------------------------------- --trust-checkpoint (benign only)

def _tiny_multihead(folder: Path, name: str = "mh"):
    from fadiag.models.multihead import MultiHeadLearner

    torch.manual_seed(0)
    m = MultiHeadLearner(n_features=4, hidden=[4], n_heads=2, normalize=True)
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    np.savez(folder / f"{name}_data.npz", x=torch.randn(32, 4, generator=g).numpy(),
             y=torch.randn(32, 2, generator=g).numpy())
    spec = {"model": {"arch": "multihead", "args": {"n_features": 4, "hidden": [4], "n_heads": 2}},
            "data": {"source": "npz", "path": f"{name}_data.npz", "batch_size": 8, "batches": 4}}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return folder / f"{name}.pt", sd


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_trust_checkpoint_is_the_only_way_past_and_is_recorded(run_cli, tmp_path, tiny_resmlp_ckpt, legacy):
    """A benign custom container class: refused without the flag (class named), loaded and recorded with it."""
    files = tiny_resmlp_ckpt()
    torch.save(CheckpointBox(model=files.state_dict), files.ckpt, _use_new_zipfile_serialization=not legacy)
    mh, mh_sd = _tiny_multihead(tmp_path)
    torch.save(CheckpointBox(model=mh_sd), mh, _use_new_zipfile_serialization=not legacy)
    box = f"{CheckpointBox.__module__}.CheckpointBox" if not legacy else "CheckpointBox"
    runs = {"audit": files.ckpt, "credit": files.ckpt, "relevance": mh, "inspect": files.ckpt}
    for cmd, ck in runs.items():
        if cmd != "inspect":
            one_line_refusal(*run_cli([cmd, ck, "-f", "json"]), "refusing to unpickle", box, "--trust-checkpoint")
        code, out, err = run_cli([cmd, ck, "-f", "json", "--trust-checkpoint"])
        assert "Traceback" not in err
        rep = json.loads(out)
        assert rep["checkpoint"]["trusted"] is True, cmd
        if cmd == "inspect":
            assert code == 1 and {f["id"]: f for f in rep["flags"]}["unsafe"]["flagged"] is True
        else:
            assert code in (0, 1), (cmd, err)
    # without the flag, the same report says trusted = false for a plain file
    torch.save({"model": files.state_dict}, files.ckpt)
    code, out, _ = run_cli(["audit", files.ckpt, "-f", "json"])
    assert json.loads(out)["checkpoint"]["trusted"] is False


# ------------------------------------------------------------------ code named by data inside the checkpoint

def test_embedded_spec_cannot_name_code_to_run(run_cli, tmp_path, tiny_resmlp_ckpt):
    files = tiny_resmlp_ckpt(sidecar=False)
    probe = {"model": {"arch": "tempfile:mkdtemp", "args": {"dir": str(tmp_path), "prefix": "EMBEDDED_RAN_"}}}
    torch.save({"model": files.state_dict, "fadiag_spec": probe}, files.ckpt)
    for cmd in ("audit", "credit", "relevance"):
        code, out, err = run_cli([cmd, files.ckpt, "-f", "json"])
        assert not list(tmp_path.glob("EMBEDDED_RAN_*")), f"{cmd}: a callable named inside the checkpoint ran"
        one_line_refusal(code, out, err, str(files.ckpt))
