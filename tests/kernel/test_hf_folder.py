"""A Hugging Face model folder given as the checkpoint (config.json + model.safetensors; fadiag.checkpoint.hf).

Each folder is written in the test with ``save_pretrained`` from a small random config (nothing downloaded),
and audited beside the same weights given as a ``transformers:`` spec: the JSON must be identical except the
fields that name the checkpoint and spec. Remote code, lying weight files and unsafe .bin files are refused
with exit 2 and one line."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
import yaml

from test_models_hf import BERT, GPT2, _build, _ref
from test_stream import B, NB, check_ab, lm_loss

transformers = pytest.importorskip("transformers")

#: Fields that name the inputs (the checkpoint file or folder, the spec file; method_name defaults to the
#: checkpoint's name) or the run, not the numbers.
NAMING = ("checkpoint", "spec", "method_name", "runtime", "settings")


def _case(tmp_path, cls, cfg, x, y, **save):
    """(folder written by save_pretrained, the same weights as m.pt, its full spec, a data-only spec)."""
    m = _build(cls, cfg)
    folder = tmp_path / "m"
    m.save_pretrained(folder, **save)
    torch.save({"model": m.state_dict()}, tmp_path / "m.pt")
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    data = {"source": "npz", "path": "d.npz", "batch_size": B, "batches": NB}
    (tmp_path / "full.yaml").write_text(yaml.safe_dump({"model": {"arch": f"transformers:{cls}", "args": cfg},
                                                        "data": data}))
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"data": data}))
    return m, folder


def _json(run_cli, *args):
    code, out, err = run_cli([*map(str, args), "-f", "json", "-q"])
    assert code in (0, 1), err
    return json.loads(out)


def _same_numbers(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k not in NAMING} == {k: v for k, v in b.items() if k not in NAMING}


def _ids(seed, T=8):
    return torch.randint(1, 23, (B * NB, T), generator=torch.Generator().manual_seed(seed))


def test_gpt2_folder_audits_and_credits_as_its_transformers_spec(tmp_path, run_cli):
    x = _ids(11)
    m, folder = _case(tmp_path, "GPT2LMHeadModel", GPT2, x, x)
    assert not any(k == "lm_head.weight" for k in _safetensors_keys(folder / "model.safetensors"))  # tied: left out
    for cmd in ("audit", "credit"):
        got = _json(run_cli, cmd, folder, "--spec", tmp_path / "data.yaml")
        want = _json(run_cli, cmd, tmp_path / "m.pt", "--spec", tmp_path / "full.yaml")
        _same_numbers(got, want)
    rep = _json(run_cli, "audit", folder, "--spec", tmp_path / "data.yaml")
    assert rep["checkpoint"]["format"] == "hf-safetensors" and rep["checkpoint"]["path"] == str(folder)
    assert rep["data"]["stream"]["source"] == "preset: Hugging Face GPT2LMHeadModel"
    assert rep["data"]["stream"]["loss"] == "lm"
    hs, gs = _ref(m, lambda mm: mm.transformer.h, x[:B], x[:B], lm_loss)
    check_ab(rep, [h.mean(1) for h in hs], [g.sum(1) for g in gs])


def test_bert_folder_needs_no_spec_only_data(tmp_path, run_cli):
    x = _ids(12)
    y = torch.randint(0, 3, (B * NB,), generator=torch.Generator().manual_seed(13))
    _, folder = _case(tmp_path, "BertForSequenceClassification", BERT, x, y)
    want = _json(run_cli, "audit", tmp_path / "m.pt", "--spec", tmp_path / "full.yaml")
    got = _json(run_cli, "audit", folder, "--data", tmp_path / "d.npz", "--batches", NB, "--batch-size", B)
    _same_numbers(got, want)
    assert got["spec"] == str(folder / "config.json") and got["data"]["stream"]["pool"] == "cls"
    code, out, err = run_cli(["audit", str(folder), "-f", "json"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no eval data" in err and "--data" in err


def test_sharded_folder_and_pytorch_model_bin_read_the_same_weights(tmp_path, run_cli):
    x = _ids(14)
    m, folder = _case(tmp_path, "GPT2LMHeadModel", GPT2, x, x, max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").exists()
    want = _json(run_cli, "audit", tmp_path / "m.pt", "--spec", tmp_path / "full.yaml")
    _same_numbers(_json(run_cli, "audit", folder, "--spec", tmp_path / "data.yaml"), want)
    binf = tmp_path / "b"
    binf.mkdir()
    (binf / "config.json").write_text((folder / "config.json").read_text())
    sd = {k: v for k, v in m.state_dict().items() if k != "lm_head.weight"}
    torch.save(sd, binf / "pytorch_model.bin")
    got = _json(run_cli, "audit", binf, "--spec", tmp_path / "data.yaml")
    assert got["checkpoint"]["format"] == "hf-torch"
    _same_numbers(got, want)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/fadiag_hf_pwned",))


def _refused(run_cli, folder, *needles, extra=()):
    code, out, err = run_cli(["audit", str(folder), "--data", "d.npz", "-f", "json", *extra])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_refusals(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = _ids(15)
    _, folder = _case(tmp_path, "GPT2LMHeadModel", GPT2, x, x)
    cfg = json.loads((folder / "config.json").read_text())

    def variant(name, config=cfg, files=()):
        f = tmp_path / name
        f.mkdir()
        (f / "config.json").write_text(json.dumps(config))
        for fname, src in files:
            (f / fname).write_bytes(src)
        return f

    weights = [("model.safetensors", (folder / "model.safetensors").read_bytes())]
    _refused(run_cli, variant("remote", {**cfg, "auto_map": {"AutoModel": "modeling_x.X"}}, weights),
             "auto_map", "trust_remote_code")
    _refused(run_cli, variant("remote2", {**cfg, "trust_remote_code": True}, weights), "remote code")
    _refused(run_cli, variant("noarch", {k: v for k, v in cfg.items() if k != "architectures"}, weights),
             "architectures")
    _refused(run_cli, variant("odd", {**cfg, "architectures": ["NoSuchModelClass"]}, weights), "NoSuchModelClass")
    _refused(run_cli, variant("empty"), "without model.safetensors")
    # config.json is data: a config describing 12e9 parameters is refused before anything is allocated
    _refused(run_cli, variant("huge", {**cfg, "n_embd": 16000, "vocab_size": 200_000}, weights),
             "parameters, over the limit")
    evil = pickle.dumps({"w": _Boom()}, protocol=2)
    liar = variant("liar", files=[("model.safetensors", evil)])
    _refused(run_cli, liar, "not safetensors")
    _refused(run_cli, liar, "not safetensors", extra=["--trust-checkpoint"])  # never unpickled, even trusted
    _refused(run_cli, variant("bin", files=[("pytorch_model.bin", evil)]), "posix.system")
    assert not os.path.exists("/tmp/fadiag_hf_pwned")
    index = {"weight_map": {"transformer.wte.weight": "../m/model.safetensors"}}
    _refused(run_cli, variant("shards", files=[("model.safetensors.index.json", json.dumps(index).encode())]),
             "plain file names")
    code, _, err = run_cli(["audit", str(tmp_path), "--data", "d.npz"])  # a folder, but neither kind
    assert code == 2 and "config.json" in err


def _safetensors_keys(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_spec_defaults_fill_only_missing_sections(tmp_path):
    """A spec given for a folder may leave out model: (config.json's is used); a model: it names wins."""
    from fadiag.spec import discover_spec

    default = {"model": {"arch": "transformers:GPT2LMHeadModel", "args": {"n_layer": 1}}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"data": {"path": "x.npz"}}))
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"model": {"arch": "resmlp"}, "data": {"path": "x.npz"}}))
    sp = discover_spec(str(tmp_path / "f"), None, str(tmp_path / "d.yaml"), defaults=default)
    assert sp.model.arch == "transformers:GPT2LMHeadModel" and sp.data.path == "x.npz"
    assert discover_spec(str(tmp_path / "f"), None, str(tmp_path / "m.yaml"), defaults=default).model.arch == "resmlp"
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({"data": {"path": "side.npz"}}))  # the sidecar beside folder f
    sp = discover_spec(str(tmp_path / "f"), None, None, defaults=default)
    assert sp.origin == str(tmp_path / "f.yaml") and sp.model.args == {"n_layer": 1}
    sp = discover_spec(str(tmp_path / "g"), None, None, defaults=default, defaults_origin="g/config.json")
    assert sp.origin == "g/config.json" and sp.data.path is None
