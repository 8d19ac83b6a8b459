"""Hugging Face GPT-2, BERT, ViT and Llama from small configs (random init, nothing downloaded), audited and
credited from a spec that names only the class and its config fields. (a) and (b) against HF's own
``output_hidden_states`` in float64, with h_L taken by a hook on the last block (HF's last hidden state is
after the final norm, which would be off by up to 200% and give ||g_L|| = 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_stream import B, NB, check_ab, ce_loss, lm_loss, run, write_case, xy

transformers = pytest.importorskip("transformers")

GPT2 = {"n_layer": 3, "n_embd": 16, "n_head": 2, "vocab_size": 23, "n_positions": 16, "bos_token_id": 0,
        "eos_token_id": 0}
BERT = {"num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32,
        "vocab_size": 23, "num_labels": 3, "max_position_embeddings": 16}
VIT = {"num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32,
       "image_size": 8, "patch_size": 4, "num_channels": 1, "num_labels": 3}
LLAMA = {"num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 2,
         "intermediate_size": 32, "vocab_size": 23, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}


def _build(cls, cfg):
    torch.manual_seed(0)
    c = getattr(transformers, cls)
    return c(c.config_class(**cfg)).eval()


def _ref(model, blocks, x, y, loss):
    """float64: hidden_states[0..L-1] are what blocks 0..L-1 consume; h_L from a hook on the last block."""
    m = model.double().eval()
    last = []
    hk = blocks(m)[-1].register_forward_hook(lambda mod, a, o: last.append(o[0] if isinstance(o, tuple) else o))
    try:
        xin = x.double() if x.is_floating_point() else x
        out = m(xin, output_hidden_states=True)
    finally:
        hk.remove()
    hs = list(out.hidden_states[:-1]) + [last[0]]
    return hs, list(torch.autograd.grad(loss(out.logits, y), hs))


def _ids(seed, T=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 23, (B * NB, T), generator=g)


def test_gpt2_lm_matches_float64_and_never_reads_after_ln_f(tmp_path, run_cli):
    m = _build("GPT2LMHeadModel", GPT2)
    x = _ids(1)
    ck, sp = write_case(tmp_path, m, "transformers:GPT2LMHeadModel", GPT2, x, x)
    rep = run(run_cli, "audit", ck, sp)
    st = rep["data"]["stream"]
    assert st["blocks"] == "transformer.h.0..2" and st["loss"] == "lm" and st["pool"] == "mean"
    hs, gs = _ref(m, lambda mm: mm.transformer.h, x[:B], x[:B], lm_loss)
    check_ab(rep, [h.mean(1) for h in hs], [g.sum(1) for g in gs])
    assert rep["bp_grad_norms"][-1] > 1e-4  # never the zero gradient of a post-ln_f readout
    cr = run(run_cli, "credit", ck, sp)
    assert cr["means"]["rho"]["deep_only"] > 0.99 and cr["stream"]["loss"] == "lm"


def test_gpt2_last_token_pool_for_classification(tmp_path, run_cli):
    m = _build("GPT2ForSequenceClassification", {**GPT2, "num_labels": 3, "pad_token_id": 0})
    x = _ids(2)
    y = torch.randint(0, 3, (B * NB,), generator=torch.Generator().manual_seed(3))
    ck, sp = write_case(tmp_path, m, "transformers:GPT2ForSequenceClassification",
                        {**GPT2, "num_labels": 3, "pad_token_id": 0}, x, y)
    rep = run(run_cli, "audit", ck, sp)
    assert rep["data"]["stream"]["pool"] == "last"
    hs, gs = _ref(m, lambda mm: mm.transformer.h, x[:B], y[:B], ce_loss)
    check_ab(rep, [h[:, -1] for h in hs], [g[:, -1] for g in gs])


def test_bert_classifier_matches_float64(tmp_path, run_cli):
    m = _build("BertForSequenceClassification", BERT)
    x = _ids(4)
    y = torch.randint(0, 3, (B * NB,), generator=torch.Generator().manual_seed(5))
    ck, sp = write_case(tmp_path, m, "transformers:BertForSequenceClassification", BERT, x, y)
    rep = run(run_cli, "audit", ck, sp)
    assert rep["data"]["stream"]["blocks"] == "bert.encoder.layer.0..1" and rep["data"]["stream"]["pool"] == "cls"
    hs, gs = _ref(m, lambda mm: mm.bert.encoder.layer, x[:B], y[:B], ce_loss)
    check_ab(rep, [h[:, 0] for h in hs], [g[:, 0] for g in gs])
    cr = run(run_cli, "credit", ck, sp)
    assert cr["means"]["rho"]["deep_only"] > 0.99


def test_hf_vit_matches_float64(tmp_path, run_cli):
    m = _build("ViTForImageClassification", VIT)
    x, y = xy(6, 1, 8, 8)
    ck, sp = write_case(tmp_path, m, "transformers:ViTForImageClassification", VIT, x, y)
    rep = run(run_cli, "audit", ck, sp)
    path = rep["data"]["stream"]["blocks"]
    assert path in ("vit.layers.0..1", "vit.encoder.layer.0..1")  # 5.x / 4.x: taken from the model
    blocks = (lambda mm: mm.vit.layers) if path.startswith("vit.layers") else (lambda mm: mm.vit.encoder.layer)
    hs, gs = _ref(m, blocks, x[:B], y[:B], ce_loss)
    check_ab(rep, [h[:, 0] for h in hs], [g[:, 0] for g in gs])
    cr = run(run_cli, "credit", ck, sp)
    assert cr["means"]["rho"]["deep_only"] > 0.99


def test_llama_style_decoder_runs_audit_and_credit(tmp_path, run_cli):
    m = _build("LlamaForCausalLM", LLAMA)
    x = _ids(7)
    ck, sp = write_case(tmp_path, m, "transformers:LlamaForCausalLM", LLAMA, x, x)
    rep = run(run_cli, "audit", ck, sp)
    assert rep["data"]["stream"]["blocks"] == "model.layers.0..1"
    hs, gs = _ref(m, lambda mm: mm.model.layers, x[:B], x[:B], lm_loss)
    check_ab(rep, [h.mean(1) for h in hs], [g.sum(1) for g in gs])
    cr = run(run_cli, "credit", ck, sp)
    assert cr["means"]["rho"]["deep_only"] > 0.99


def test_stream_auto_on_hf_finds_the_layers(tmp_path, run_cli):
    m = _build("BertForSequenceClassification", BERT)
    x = _ids(8)
    y = torch.randint(0, 3, (B * NB,), generator=torch.Generator().manual_seed(9))
    ck, sp = write_case(tmp_path, m, "transformers:BertForSequenceClassification", BERT, x, y, "auto")
    rep = run(run_cli, "audit", ck, sp)
    st = rep["data"]["stream"]
    assert st["source"].startswith("auto:") and "bert.encoder.layer" in st["source"] and st["residual"] == "inside"


def test_token_ids_stay_integer(tmp_path):
    from fadiag.data import validate_xy

    ids = torch.randint(0, 23, (4, 8))
    x, y = validate_xy(ids, ids, source="t", integer_labels="tokens", keep_int=True)
    assert x.dtype == torch.int64 and y.shape == (4, 8)
    x2, _ = validate_xy(ids, ids[:, 0], source="t")
    assert x2.dtype == torch.float32  # models without an embedding still get floats


def test_hf_class_never_gets_remote_code():
    from fadiag.models import build_model

    m = build_model("transformers:BertForSequenceClassification", {**BERT, "trust_remote_code": True})
    assert type(m).__name__ == "BertForSequenceClassification"
    np.testing.assert_equal(m.config.num_hidden_layers, 2)
