"""Issue 22's 48 Hugging Face architectures (tests/hf_zoo.py: tiny random configs, 2 layers, hidden 64), each
written by ``save_pretrained`` and audited with no spec: exit 0/1 with one block per layer. A representative
dozen runs by default, all 48 with ``python -m pytest -m slow tests/kernel/test_hf_zoo.py``. The new readings (ALBERT's
shared layer, T5 and BART decoders) are checked against float64 references with hooks of their own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_stream import B, NB, check_ab, ce_loss, grads64, lm_loss

transformers = pytest.importorskip("transformers")
import hf_zoo  # noqa: E402
from coverage_table import check as check_row  # noqa: E402


def _audit(run_cli, tmp_path, name, m=None, x=None, y=None):
    m = hf_zoo.build(name) if m is None else m
    tmp_path.mkdir(parents=True, exist_ok=True)
    folder = tmp_path / name
    m.save_pretrained(folder)
    if x is None:
        x, y = hf_zoo.data(name)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    code, out, err = run_cli(["audit", str(folder), "--data", str(tmp_path / "d.npz"), "--batches", str(NB),
                              "--batch-size", str(B), "-f", "json", "-q"])
    return m, folder, code, out, err


def _expected_blocks(m) -> int:
    cfg = m.config
    depths = getattr(cfg, "depths", None)
    if isinstance(depths, (list, tuple)) and depths:
        return sum(depths)
    return getattr(cfg, "num_decoder_layers", None) or getattr(cfg, "decoder_layers", None) or cfg.num_hidden_layers


def _check_zoo(name, tmp_path, run_cli):
    m, folder, code, out, err = _audit(run_cli, tmp_path, name)
    assert code in (0, 1), f"{name}: {err}"
    st = json.loads(out)["data"]["stream"]
    assert st["source"] == f"preset: Hugging Face {type(m).__name__}", st
    check_row(name, st)  # docs/models.md's coverage table
    assert st["n_blocks"] == _expected_blocks(m) == (3 if name in ("convnext", "resnet") else 2), st
    if name == "mamba2":  # its config.json holds an encoded infinity that transformers' config decodes
        assert "__float__" in (folder / "config.json").read_text()


@pytest.mark.parametrize("name", hf_zoo.DEFAULT)
def test_zoo_dozen_audits_with_no_spec(name, tmp_path, run_cli):
    _check_zoo(name, tmp_path, run_cli)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in hf_zoo.ZOO if n not in hf_zoo.DEFAULT])
def test_zoo_rest_audits_with_no_spec(name, tmp_path, run_cli):
    _check_zoo(name, tmp_path, run_cli)


def _hooked(m, blocks, run):
    """float64 run with hooks that record what each listed block call consumes and the last call's output."""
    hs = []

    def pre(mod, a, k):
        hs.append(a[0] if a else k["hidden_states"])

    def post(mod, a, k, o):
        last[:] = [o[0] if isinstance(o, tuple) else o]

    last: list = []
    hooks = [b.register_forward_pre_hook(pre, with_kwargs=True) for b in dict.fromkeys(blocks)]
    hooks.append(blocks[-1].register_forward_hook(post, with_kwargs=True))
    try:
        loss = run()
    finally:
        for h in hooks:
            h.remove()
    hs.append(last[0])
    return hs, grads64(loss, hs)


def test_albert_shared_layer_gives_one_state_per_application(tmp_path, run_cli):
    m, _, code, out, err = _audit(run_cli, tmp_path, "albert")
    assert code in (0, 1), err
    rep = json.loads(out)
    assert rep["data"]["stream"]["n_blocks"] == 2 and "applied 2 times" in rep["data"]["stream"]["blocks"]
    x, y = hf_zoo.data("albert")
    m = m.double()
    layer = m.albert.encoder.albert_layer_groups[0].albert_layers[0]
    hs, gs = _hooked(m, [layer, layer], lambda: ce_loss(m(x[:B]).logits, y[:B]))
    assert len(hs) == 3 and not torch.equal(hs[0], hs[1])
    check_ab(rep, [h[:, 0] for h in hs], [g[:, 0] for g in gs])


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_encoder_decoder_reads_the_decoder_with_labels_shifted_once(name, tmp_path, run_cli):
    m, folder, code, out, err = _audit(run_cli, tmp_path, name)
    assert code in (0, 1), err
    rep = json.loads(out)
    st = rep["data"]["stream"]
    assert "decoder" in st["blocks"] and st["loss"] == "lm" and st["pool"] == "mean"
    xs, _ = hf_zoo.data(name)
    x = xs[:B]
    m = m.double()
    start = m.config.decoder_start_token_id
    dec = torch.cat([torch.full((B, 1), start), x], 1)  # the start token, then x: logits 1..T see x_0..x_t
    blocks = list(m.get_decoder().block if name == "t5" else m.get_decoder().layers)
    hs, gs = _hooked(m, blocks, lambda: lm_loss(m(input_ids=x, decoder_input_ids=dec).logits[:, 1:], x))
    check_ab(rep, [h.mean(1) for h in hs], [g.sum(1) for g in gs])
    # labels other than x would be scored against a decoder fed x: refused
    _, _, code, _, err = _audit(run_cli, tmp_path, name, m=hf_zoo.build(name), x=xs, y=xs.flip(1))
    assert code == 2 and "labels y must equal x" in err, err


def test_bfloat16_folder_reports_its_dtype_and_reads_as_float32(tmp_path, run_cli):
    """transformers loads the folder in its own dtype: the report names bfloat16, the numbers are the float32
    audit of the same (bfloat16-rounded) weights."""
    m = hf_zoo.build("llama_tied").to(torch.bfloat16)
    _, _, code, out, err = _audit(run_cli, tmp_path / "bf16", "llama_tied", m=m)
    assert code in (0, 1), err
    _, _, code, out32, err = _audit(run_cli, tmp_path / "f32", "llama_tied", m=m.float())
    assert code in (0, 1), err
    a, b = json.loads(out), json.loads(out32)
    assert a["weight_dtypes"] == ["bfloat16"] and b["weight_dtypes"] == ["float32"]
    assert a["residual_norms"] == b["residual_norms"] and a["bp_grad_norms"] == b["bp_grad_norms"]


def test_legacy_buffer_and_missing_weight(tmp_path, run_cli):
    """A legacy buffer the class no longer has (all-MiniLM's embeddings.position_ids) loads as transformers
    loads it; a weight the folder lacks is refused by name (it would stay random), never "does not match"."""
    from safetensors.torch import load_file, save_file

    m, folder, code, _, err = _audit(run_cli, tmp_path, "bert")
    assert code in (0, 1), err
    sd = load_file(folder / "model.safetensors")
    sd["bert.embeddings.position_ids"] = torch.arange(64)[None]
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    args = ["audit", str(folder), "--data", str(tmp_path / "d.npz"), "--batches", "2", "--batch-size", "4", "-q"]
    code, _, err = run_cli(args)
    assert code in (0, 1), err
    del sd["bert.encoder.layer.1.output.dense.weight"]
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    code, out, err = run_cli(args)
    assert code == 2 and out == "" and "missing weight(s): bert.encoder.layer.1.output.dense.weight" in err, err
    assert "does not match" not in err
