"""Folders and data files as an attacker would stage them (docs/safety.md, "Folders", "No network").

- Hugging Face folders whose config.json names remote weights, a Hub backbone or Hub kernels, and a spec naming
  such a class, run in a child process under a network guard: any DNS lookup or connect() to a non-local
  address is recorded (and fails). Each is exit 2 with one stderr line naming the field, and the guard records
  nothing. transformers' warnings never add lines before that one.
- Folders (Hugging Face, alberta-framework) with a file symlinked out of the folder, a sparse 20 GiB file,
  deeply nested or mistyped metadata JSON, arrays declaring far more bytes than the folder holds, chunks
  larger than their array: exit 2, one line, before anything is read or hashed.
- Data files: a .pt holding a pickle payload, a zero-stride view describing 64 GiB, a deflated zip member
  inflating past the zip budget: exit 2, one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _budget import HANG_GUARD_S
from _payloads import RunsShellOnLoad
from conftest import REPO

BASE = REPO / "tests" / "corpus" / "base"
ALB = REPO / "tests" / "fixtures" / "alberta"
OBS = "0.3,-2.0,0.05,1.5,-0.4"

GUARD = r'''
import json, os, socket, sys
HITS = []
def _local(host):
    h = "" if host is None else (host.decode() if isinstance(host, bytes) else str(host))
    return h in ("", "localhost", "::1") or h.startswith("127.")
_gai, _connect = socket.getaddrinfo, socket.socket.connect
def getaddrinfo(host, *a, **k):
    if not _local(host):
        HITS.append(f"getaddrinfo {host}")
        raise OSError("network guard: " + str(host))
    return _gai(host, *a, **k)
def connect(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(addr[0]):
        HITS.append(f"connect {addr}")
        raise OSError("network guard: " + str(addr))
    return _connect(self, addr)
socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "0"  # fadiag must turn them back on
from fadiag.cli import app
codes = {}
for name, argv in json.loads(sys.argv[1]):
    sys.stdout.flush(); sys.stderr.flush()
    fd, saved = os.open(f"{name}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), os.dup(2)
    os.dup2(fd, 2)
    try:
        app(args=argv, prog_name="fadiag")
    except SystemExit as e:
        codes[name] = e.code
    finally:
        sys.stderr.flush(); os.dup2(saved, 2); os.close(fd)
print(json.dumps({"codes": codes, "hits": HITS, "offline": os.environ.get("HF_HUB_OFFLINE")}))
'''


def _hf(folder: Path, cfg: dict) -> Path:
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    return folder


DETR = {"architectures": ["DetrForObjectDetection"], "model_type": "detr", "use_timm_backbone": False,
        "d_model": 16, "num_queries": 4}
GPT2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 8, "n_layer": 1, "n_head": 2,
        "vocab_size": 23, "n_positions": 16}


def test_attack_folders_never_touch_the_network(tmp_path):
    pytest.importorskip("transformers")
    for f in BASE.iterdir():
        shutil.copy(f, tmp_path / f.name)
    _hf(tmp_path / "detr_pretrained", {**DETR, "backbone": "org/name", "use_pretrained_backbone": True})
    _hf(tmp_path / "detr_hub", {**DETR, "backbone": "org/name", "use_pretrained_backbone": False})
    _hf(tmp_path / "kernels", {**GPT2, "attn_implementation": "kernels-community/flash-attn2"})
    _hf(tmp_path / "warns", {**GPT2, "bos_token_id": 50256, "eos_token_id": 50256})  # warns, then exit 2
    spec = yaml.safe_load((BASE / "tiny.yaml").read_text())
    (tmp_path / "detr.yaml").write_text(yaml.safe_dump({**spec, "model": {
        "arch": "transformers:DetrForObjectDetection", "args": {"backbone": "org/name", "use_pretrained_backbone":
                                                                True, "use_timm_backbone": False}}}))
    (tmp_path / "tv.yaml").write_text(yaml.safe_dump({**spec, "model": {
        "arch": "torchvision.models:resnet18", "args": {"weights": "DEFAULT"}}}))
    data = ["--data", "tiny_data.npz", "--batches", "2", "--batch-size", "4", "-f", "json"]
    cases = {"detr_pretrained": (["audit", "detr_pretrained", *data], "use_pretrained_backbone"),
             "detr_hub": (["audit", "detr_hub", *data], "backbone = 'org/name'"),
             "kernels": (["audit", "kernels", *data], "attn_implementation"),
             "warns": (["audit", "warns", *data], "missing weight(s)"),  # transformers names them
             "detr_spec": (["audit", "tiny.pt", "--spec", "detr.yaml", *data], "model.args.use_pretrained_backbone"),
             "tv_spec": (["audit", "tiny.pt", "--spec", "tv.yaml", *data], "model.args.weights")}
    (tmp_path / "guard.py").write_text(GUARD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "guard.py", json.dumps([(k, v[0]) for k, v in cases.items()])],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["hits"] == [] and got["offline"] == "1", got
    for name, (_, needle) in cases.items():
        err = (tmp_path / f"{name}.err").read_text()
        assert got["codes"][name] == 2 and len(err.strip().splitlines()) == 1, (name, err)
        assert needle in err and "Traceback" not in err, (name, err)


def _run(run_cli, args, *needles):
    code, out, err = run_cli([str(a) for a in args])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, err)
    for n in needles:
        assert n in err, err
    return err


def _sparse(path: Path, size: int = 20 * 1024**3) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # no blocks written: the file system declares 20 GiB


def test_hf_folder_reads_stay_inside_and_within_limits(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for f in BASE.iterdir():
        shutil.copy(f, tmp_path / f.name)
    data = ["--data", "tiny_data.npz"]
    out = _hf(tmp_path / "elsewhere", GPT2)
    link = _hf(tmp_path / "link", GPT2)
    (link / "model.safetensors").unlink()
    os.symlink(out / "model.safetensors", link / "model.safetensors")
    _run(run_cli, ["audit", link, *data], "model.safetensors is a symlink", "outside the folder")
    cfg = _hf(tmp_path / "cfglink", GPT2)
    (cfg / "config.json").unlink()
    os.symlink(out / "config.json", cfg / "config.json")
    _run(run_cli, ["audit", cfg, *data], "config.json is a symlink", "outside the folder")
    sparse = _hf(tmp_path / "sparse", GPT2)
    _sparse(sparse / "model-00002-of-00002.safetensors")
    _run(run_cli, ["audit", sparse, *data], "declare over", "checkpoint limit")
    deep = _hf(tmp_path / "deep", GPT2)
    (deep / "config.json").write_text('{"a": ' * 5000 + "1" + "}" * 5000)
    _run(run_cli, ["audit", deep, *data], "config.json", "nested")


@pytest.fixture
def alberta(tmp_path, monkeypatch):
    ts = pytest.importorskip("tensorstore")
    monkeypatch.chdir(tmp_path)

    def make(name: str, arrays=(), meta=None) -> Path:
        """A copy of the autostep_noln fixture with extra arrays (name, shape, chunks) written into its OCDBT
        store (declared only: nothing but metadata is written) and, if given, a replaced state/_METADATA."""
        d = tmp_path / name
        shutil.copytree(ALB / "autostep_noln", d)
        mpath = d / "state" / "_METADATA"
        m = json.loads(mpath.read_text())
        for key, shape, chunks in arrays:
            kv = {"driver": "ocdbt", "base": (d / "state").resolve().as_uri() + "/", "path": key}
            ts.open({"driver": "zarr", "kvstore": kv, "metadata": {"shape": shape, "chunks": chunks, "dtype": "<f4"}},
                    create=True, delete_existing=True).result()
            m["tree_metadata"][key] = {"key_metadata": [{"key": k, "key_type": 2} for k in key.split(".")],
                                       "value_metadata": {"value_type": "jax.Array", "skip_deserialize": False}}
        mpath.write_text(json.dumps(m) if meta is None else meta)
        return d

    return make


def test_alberta_folder_attacks_are_exit_2_before_any_read(alberta, run_cli, tmp_path):
    rel = ["relevance", "--observation", OBS, "-f", "json"]
    big = [(f"extra.big{i}", [2**14, 3 * 2**13], [2**12, 2**12]) for i in range(4)]  # 4 x 384 MiB from ~60 KB
    _run(run_cli, [rel[0], alberta("big", big), *rel[1:]], "arrays declare over", "on disk")
    _run(run_cli, [rel[0], alberta("chunk", [("extra.c", [4, 3], [2**30, 2**30])]), *rel[1:]], "declares chunks")
    _run(run_cli, [rel[0], alberta("deep", meta="[" * 100_000 + "]" * 100_000), *rel[1:]], "nested")
    _run(run_cli, [rel[0], alberta("deep2", meta=json.dumps({"tree_metadata": {"a": {"k": [[[[1]]]]}}})
                                   .replace("[[[[1]]]]", "[" * 80 + "]" * 80)), *rel[1:]], "nested")
    for i, bad in enumerate(([1, 2], {"key_metadata": "abc"}, {"key_metadata": [{"key": None}]},
                             {"key_metadata": [{"key": "a"}], "value_metadata": [1]})):
        meta = json.dumps({"tree_metadata": {"x": bad}})
        _run(run_cli, [rel[0], alberta(f"typed{i}", meta=meta), *rel[1:]], "malformed tree entry")
    _run(run_cli, [rel[0], alberta("typed_top", meta="[1, 2]"), *rel[1:]], "no usable tree_metadata")
    out = tmp_path / "outside"
    out.mkdir()
    d = alberta("link")
    shutil.rmtree(d / "state" / "d")
    os.symlink(out, d / "state" / "d")
    _run(run_cli, [rel[0], d, *rel[1:]], "state/d is a symlink", "outside the folder")
    d = alberta("sparse")
    _sparse(d / "state" / "d" / "zzzz")
    _run(run_cli, [rel[0], d, *rel[1:]], "declare over")
    d = alberta("pipe")
    os.mkfifo(d / "metadata" / "fifo")
    _run(run_cli, [rel[0], d, *rel[1:]], "not a regular file")


def test_data_pt_is_read_as_a_checkpoint(tmp_path, run_cli, monkeypatch):
    import io
    import zipfile

    monkeypatch.chdir(tmp_path)
    for f in BASE.iterdir():
        shutil.copy(f, tmp_path / f.name)
    spec = yaml.safe_load((BASE / "tiny.yaml").read_text())
    torch.save({"x": torch.zeros(8, 8), "y": torch.zeros(8, dtype=torch.long), "z": RunsShellOnLoad("touch MARKER")},
               "evil.pt")
    torch.save({"x": torch.zeros(1).expand(2**20, 2**14), "y": torch.zeros(1, dtype=torch.long).expand(2**20)},
               "stride.pt")  # 64 GiB described by one stored float
    buf = io.BytesIO()
    torch.save({"x": torch.zeros(8, 8), "y": torch.zeros(8, dtype=torch.long)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile("bomb.pt", "w") as z:
        for n in src.namelist():
            z.writestr(n, src.read(n))
        z.writestr(src.namelist()[0].split("/")[0] + "/extra", b"\0" * (300 * 2**20), zipfile.ZIP_DEFLATED)
    for name, needle in (("evil.pt", "posix.system"), ("stride.pt", "describes 68,719,476,736 bytes"),
                         ("bomb.pt", "zip bomb")):
        (tmp_path / "s.yaml").write_text(yaml.safe_dump({**spec, "data": {"source": "pt", "path": name}}))
        _run(run_cli, ["audit", "tiny.pt", "--spec", "s.yaml", "--batches", "2", "--batch-size", "4"], name, needle)
    assert not (tmp_path / "MARKER").exists()


def test_a_hub_cache_snapshot_may_link_into_its_own_blobs(tmp_path):
    """huggingface_hub's cache links snapshots/<rev>/config.json to ../../blobs/<hash>: inside the cached
    model, so read; a link out of the cached model is still refused."""
    from fadiag.checkpoint.folders import folder_files
    from fadiag.errors import CheckpointError

    repo = tmp_path / "models--org--name"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "blobs" / "h1").write_text("{}")
    os.symlink("../../blobs/h1", snap / "config.json")
    assert [rel for rel, _, _ in folder_files(snap)] == ["config.json"]
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", snap / "model.safetensors")
    with pytest.raises(CheckpointError, match="outside the folder"):
        folder_files(snap)
