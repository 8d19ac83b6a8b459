"""fadiag.spec (validation, nearest-key hints, alias bombs, discovery order) and fadiag.checkpoint (state-dict
discovery, format sniffing, hostile safetensors headers, sha256)."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile

import numpy as np
import pytest
import torch
import yaml

from _budget import cpu_budget
from fadiag.checkpoint import find_state_dict, read_checkpoint, sha256_file, sniff_format
from fadiag.errors import CheckpointError, SpecError, UnsafeCheckpointError
from fadiag.spec import discover_spec, load_spec_file, parse_spec

MODEL = {"arch": "resmlp", "args": {"in_dim": 8, "width": 8, "depth": 3, "n_classes": 3}}


# ------------------------------------------------------------------------------------------ spec

def test_parse_spec_defaults_and_types():
    sp = parse_spec({"model": MODEL, "data": {"path": "d.npz", "batch_size": 16}, "audit": {"frozen_baseline_acc": 1}},
                    origin="s.yaml", base_dir="/x")
    assert sp.data.batch_size == 16 and sp.data.batches == 8 and sp.data.shuffle is False
    assert sp.audit.frozen_baseline_acc == 1.0 and isinstance(sp.audit.frozen_baseline_acc, float)
    assert sp.checkpoint.state_dict == "auto" and sp.audit.growth == "ratio_to_h0"
    assert sp.resolve("d.npz") == "/x/d.npz" and sp.resolve("/abs/d.npz") == "/abs/d.npz"
    with pytest.raises(Exception):
        sp.data.batch_size = 3  # frozen


def test_missing_data_path_is_an_error_only_when_data_is_needed(tiny_resmlp_ckpt, run_cli):
    """A spec may leave data out (relevance's state-only tier needs none); commands that need data say so."""
    f = tiny_resmlp_ckpt(spec_overrides={"data": {"path": None}})
    code, out, err = run_cli(["audit", f.ckpt])
    assert code == 2 and "no eval data" in err and "data.path" in err
    code, out, err = run_cli(["audit", f.ckpt, "--data", f.data, "-q", "-f", "json"])
    assert code in (0, 1), err


@pytest.mark.parametrize("raw, needles", [
    ({"model": MODEL, "data": {"path": "d.npz", "batch_size": "x"}}, ["s.yaml: data.batch_size: expected an integer"]),
    ({"model": MODEL, "data": {"path": "d.npz", "batch_size": True}}, ["data.batch_size: expected an integer"]),
    ({"model": MODEL, "data": {"path": "d.npz", "shuffle": "yes"}}, ["data.shuffle: expected true or false"]),
    ({"model": MODEL, "audit": {"frozen_baseline_acc": ".nan"}}, ["audit.frozen_baseline_acc: expected a number"]),
    ({"model": MODEL, "audit": {"frozen_baseline_acc": float("nan")}}, ["audit.frozen_baseline_acc", "finite"]),
    ({"model": {"arch": 3}}, ["model.arch: expected a string"]),
    ({"model": {"args": {}}}, ["model", "missing required key 'arch'"]),
    ({"data": {}}, ["missing required section 'model'"]),
    ({"model": MODEL, "data": "npz"}, ["data: expected a mapping"]),
    ({"model": MODEL, "data": {"source": "csv", "path": "d"}}, ["data.source", "npz, pt, digits, synthetic"]),
    ({"model": MODEL, "data": {"n_samples": 10**12}}, ["data.n_samples", "10,000,000"]),
    ({"model": MODEL, "data": {"path": "d", "batch_size": 0}}, ["data", "positive"]),
    ({"model": MODEL, "data": {"path": "d"}, "audit": {"growth": "both"}}, ["audit.growth"]),
    (["model"], ["top level must be a mapping"]),
])
def test_parse_spec_errors_name_origin_and_key_path(raw, needles):
    with pytest.raises(SpecError) as ei:
        parse_spec(raw, origin="s.yaml")
    msg = str(ei.value)
    assert msg.startswith("s.yaml: ") and "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


@pytest.mark.parametrize("raw, where, near", [
    ({"modle": MODEL}, "modle", "model"),
    ({"model": MODEL, "data": {"batch_sise": 4}}, "data.batch_sise", "batch_size"),
    ({"model": MODEL, "audit": {"treshold": {}}}, "audit.treshold", "thresholds"),
    ({"model": {**MODEL, "arg": {}}}, "model.arg", "args"),
    ({"model": MODEL, "checkpoint": {"strip_prefx": ""}}, "checkpoint.strip_prefx", "strip_prefix"),
])
def test_unknown_key_suggests_nearest(raw, where, near):
    with pytest.raises(SpecError, match=rf"{where}: unknown key \(did you mean '{near}'\?\)"):
        parse_spec(raw, origin="s.yaml")


def test_unknown_key_without_near_match_lists_valid_keys():
    with pytest.raises(SpecError) as ei:
        parse_spec({"model": MODEL, "data": {"zzzzqqq": 1}}, origin="s.yaml")
    assert "valid:" in str(ei.value) and "batch_size" in str(ei.value)


def test_load_spec_file_reports_yaml_errors_with_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("model:\n  arch: resmlp\n  args: {in_dim: 8\n")
    with pytest.raises(SpecError) as ei:
        load_spec_file(p)
    assert str(ei.value).startswith(f"{p}: invalid YAML at line")
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec_file(tmp_path / "missing.yaml")


def test_load_spec_file_never_constructs_python_objects(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("model: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec_file(p)


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("model: {arch: resmlp, args: {x: *i}}")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    with cpu_budget(2.0), pytest.raises(SpecError, match="alias"):  # expanded, it is 9**9 strings
        load_spec_file(p)


def test_oversized_spec_file_is_refused(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text("# " + "x" * (1024 * 1024 + 10) + "\nmodel: {arch: resmlp}\n")
    with pytest.raises(SpecError, match="limit"):
        load_spec_file(p)


def _spec(method: str) -> dict:
    return {"model": MODEL, "data": {"source": "synthetic"}, "audit": {"method_name": method}}


def test_spec_discovery_order(tmp_path):
    ck = tmp_path / "net.pt"
    content = {"model": {"w": torch.zeros(1)}, "fadiag_spec": _spec("embedded")}
    torch.save(content, ck)
    side = tmp_path / "net.yaml"
    side.write_text(yaml.safe_dump(_spec("sidecar")))
    explicit = tmp_path / "elsewhere" / "mine.yaml"
    explicit.parent.mkdir()
    explicit.write_text(yaml.safe_dump(_spec("explicit")))

    sp = discover_spec(str(ck), content, str(explicit))
    assert sp.audit.method_name == "explicit" and sp.origin == str(explicit)
    assert sp.base_dir == str(explicit.parent)  # paths resolve against the spec file's folder
    sp = discover_spec(str(ck), content, None)
    assert sp.audit.method_name == "sidecar" and sp.origin == str(side)
    side.unlink()
    (tmp_path / "net.yml").write_text(yaml.safe_dump(_spec("sidecar-yml")))
    assert discover_spec(str(ck), content, None).audit.method_name == "sidecar-yml"
    (tmp_path / "net.yml").unlink()
    sp = discover_spec(str(ck), content, None)
    assert sp.audit.method_name == "embedded" and sp.origin.endswith("fadiag_spec")
    with pytest.raises(SpecError, match="no spec found"):
        discover_spec(str(ck), {"model": {}}, None)


def test_embedded_spec_errors_name_the_checkpoint(tmp_path):
    ck = tmp_path / "net.pt"
    with pytest.raises(SpecError) as ei:
        discover_spec(str(ck), {"fadiag_spec": {"model": MODEL, "daat": {}}}, None)
    assert f"{ck}:fadiag_spec" in str(ei.value) and "did you mean 'data'" in str(ei.value)


# ------------------------------------------------------------------------------------ state dicts

@pytest.fixture
def sd():
    g = torch.Generator().manual_seed(0)
    return {"embed.weight": torch.randn(4, 3, generator=g), "embed.bias": torch.randn(4, generator=g)}


@pytest.mark.parametrize("key", ["model", "state_dict", "model_state_dict"])
def test_find_state_dict_common_keys(sd, key):
    content = {key: sd, "epoch": 7, "optimizer": {"state": {}, "param_groups": []}}
    got, used = find_state_dict(content)
    assert used == key and set(got) == set(sd)
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_find_state_dict_flat(sd):
    got, used = find_state_dict(dict(sd))
    assert used == "" and set(got) == set(sd)


def test_lightning_prefix_is_stripped(sd):
    content = {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3, "global_step": 10}
    got, used = find_state_dict(content)
    assert used == "state_dict" and set(got) == set(sd)
    kept, _ = find_state_dict(content, strip_prefix="")
    assert set(kept) == {f"model.{k}" for k in sd}
    # only stripped when EVERY key shares it
    mixed = {"state_dict": {"model.embed.weight": sd["embed.weight"], "head.bias": sd["embed.bias"]}}
    assert set(find_state_dict(mixed)[0]) == {"model.embed.weight", "head.bias"}
    ddp = {"module.embed.weight": sd["embed.weight"], "module.embed.bias": sd["embed.bias"]}
    assert set(find_state_dict(ddp)[0]) == set(sd)
    assert set(find_state_dict(ddp, strip_prefix="module.embed.")[0]) == {"weight", "bias"}


def test_explicit_dotted_key(sd):
    content = {"trainer": {"ema": {"model": sd}}, "model": {"other.weight": torch.zeros(1)}}
    got, used = find_state_dict(content, key="trainer.ema.model")
    assert used == "trainer.ema.model" and set(got) == set(sd)
    with pytest.raises(CheckpointError, match="trainer.missing"):
        find_state_dict(content, key="trainer.missing", source="c.pt")


def test_find_state_dict_failures(sd):
    with pytest.raises(CheckpointError, match="cannot find a state dict"):
        find_state_dict({"epoch": 1, "notes": "x"})
    with pytest.raises(CheckpointError, match="no tensors"):
        find_state_dict({"model": {"a": 1, "b": 2}}, key="model")
    with pytest.raises(CheckpointError):
        find_state_dict([sd])
    got, _ = find_state_dict({"model": {**sd, "version": 3}})  # non-tensor entries are dropped
    assert set(got) == set(sd)


# ---------------------------------------------------------------------------------------- formats

def test_sniff_format(tmp_path, sd):
    from safetensors.torch import save_file

    torch.save(sd, tmp_path / "a.pt")
    torch.save(sd, tmp_path / "b.pt", _use_new_zipfile_serialization=False)
    save_file(sd, str(tmp_path / "c.pt"))  # the suffix lies: the bytes decide
    np.savez(tmp_path / "d.npz", **{k: v.numpy() for k, v in sd.items()})
    assert sniff_format(tmp_path / "a.pt") == "torch"
    assert sniff_format(tmp_path / "b.pt") == "torch-legacy"
    assert sniff_format(tmp_path / "c.pt") == "safetensors"
    assert sniff_format(tmp_path / "d.npz") == "npz"
    for name, data in (("e.pt", b""), ("f.txt", b"hello world, not a checkpoint")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError):
            sniff_format(tmp_path / name)
    with zipfile.ZipFile(tmp_path / "g.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match="neither"):
        sniff_format(tmp_path / "g.zip")


def test_read_checkpoint_all_formats_agree(tmp_path, sd):
    from safetensors.torch import save_file

    torch.save({"model": sd}, tmp_path / "a.pt")
    save_file(sd, str(tmp_path / "b.safetensors"))
    np.savez(tmp_path / "c.npz", **{k: v.numpy() for k, v in sd.items()})
    for name, fmt in (("a.pt", "torch"), ("b.safetensors", "safetensors"), ("c.npz", "npz")):
        raw = read_checkpoint(tmp_path / name)
        assert raw.format == fmt and raw.trusted is False
        got, _ = find_state_dict(raw.content)
        assert all(torch.equal(got[k], sd[k]) for k in sd), name
        assert raw.describe()["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


def test_read_checkpoint_missing_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_checkpoint(tmp_path)


def test_npz_with_object_array_is_refused(tmp_path):
    np.savez(tmp_path / "o.npz", w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(tmp_path / "o.npz")


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize("header, data, needle", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}, b"\0" * 16, "bad data offsets"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 4]}}, b"\0" * 16, "bad data offsets"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-1, 4]}}, b"\0" * 16, "bad data offsets"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": "0-16"}}, b"\0" * 16, "bad data offsets"),
    ({"w": {"dtype": "F32", "shape": [4]}}, b"\0" * 16, "bad data offsets"),
    ({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 16]}}, b"\0" * 16, "corrupt"),
])
def test_safetensors_bad_offsets_refused(tmp_path, header, data, needle):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(_safetensors_bytes(header, data))
    with pytest.raises(CheckpointError, match=needle):
        read_checkpoint(p)


@pytest.mark.parametrize("length", [1 << 62, 2**64 - 1, 10_000])
def test_safetensors_huge_header_length_refused_quickly(tmp_path, length):
    p = tmp_path / "huge.safetensors"
    p.write_bytes(struct.pack("<Q", length) + b'{"w": {}}' + b"\0" * 64)
    with cpu_budget(2.0), pytest.raises(CheckpointError, match="header length"):  # before any read of it
        read_checkpoint(p)


def test_safetensors_header_not_json(tmp_path):
    p = tmp_path / "bad.safetensors"
    body = b"{not json at all"
    p.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_checkpoint(p)


def test_sha256_equals_hashlib(tmp_path):
    p = tmp_path / "blob.bin"
    data = bytes(range(256)) * 9000  # > 1 MiB: several read chunks
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
