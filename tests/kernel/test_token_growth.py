"""(a) on token models reads each token's norm, averaged over the tokens (docs/science.md §1 (a)), not the norm
of a mean-pooled vector (which measures the sequence length): checked against float64 loops, on random-init
Hugging Face folders written here with save_pretrained (nothing downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from fadiag.stream.spec import token_norms

transformers = pytest.importorskip("transformers")


def _loop_token_norms(h, prefix=0, mask=None):
    """float64 loops: per sample, the mean over its kept tokens of ||h[b, t]||."""
    out = []
    for b in range(h.shape[0]):
        kept = [t for t in range(prefix, h.shape[1]) if mask is None or mask[b, t] != 0]
        norms = [float(np.sqrt(sum(float(v) ** 2 for v in h[b, t].double()))) for t in kept]
        out.append(sum(norms) / len(norms))
    return out


def test_token_norms_match_loops_with_prefix_tokens_and_a_mask():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 4, generator=g) * torch.tensor([1.0, 10.0, 0.1, 3.0, 2.0]).view(1, 5, 1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 1, 0]])
    for prefix, m in ((0, None), (1, None), (0, mask), (1, mask)):
        got = token_norms(h, prefix, m)
        assert got.dtype == torch.float64
        assert got.tolist() == pytest.approx(_loop_token_norms(h, prefix, m), rel=1e-6)
    assert token_norms(h[:, 0], 0, None) is None  # (B, d): not a token state


def _folder(tmp_path, cls, cfg, T, B, NB, vocab, name):
    torch.manual_seed(0)
    c = getattr(transformers, cls)
    m = c(c.config_class(**cfg)).eval()
    m.save_pretrained(tmp_path / name)
    x = torch.randint(0, vocab, (B * NB, T), generator=torch.Generator().manual_seed(1))
    np.savez(tmp_path / "tok.npz", x=x.numpy(), y=x.numpy())
    (tmp_path / "tok.yaml").write_text(yaml.safe_dump(
        {"data": {"source": "npz", "path": "tok.npz", "batch_size": B, "batches": NB}}))
    return m, x


def _audit(run_cli, tmp_path, name):
    code, out, err = run_cli(["audit", tmp_path / name, "--spec", tmp_path / "tok.yaml", "-q", "-f", "json"])
    assert code in (0, 1), err
    return json.loads(out)


def test_gpt2_growth_is_per_token_and_matches_float64(tmp_path, run_cli):
    cfg = {"n_layer": 4, "n_embd": 32, "n_head": 2, "vocab_size": 50, "n_positions": 32}
    m, x = _folder(tmp_path, "GPT2LMHeadModel", cfg, 32, 8, 2, 50, "gpt2")
    rep = _audit(run_cli, tmp_path, "gpt2")
    assert rep["growth_statistic"] == "per_token" and rep["calibration"]["model"]["family"] == "gpt2"
    m = m.double()
    last = []
    hk = m.transformer.h[-1].register_forward_hook(lambda mod, a, o: last.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        out = m(x[:8], output_hidden_states=True)
    hk.remove()
    hs = list(out.hidden_states[:-1]) + [last[0]]
    want = [sorted(_loop_token_norms(h))[(8 - 1) // 2] for h in hs]  # the lower median, as the audit's
    assert rep["token_norms"] == pytest.approx(want, rel=1e-5)
    assert rep["growth"] == pytest.approx(max(want) / want[0], rel=1e-5)
    # the pooled h_0 averages 32 random embeddings: far below one token's norm (the ratio's artefact)
    assert rep["residual_norms"][0] < rep["token_norms"][0] / 2
    a = next(f for f in rep["flags"] if f["id"] == "a")
    assert a["flagged"] is False and a["calibration"]["inside"] is False
    # outside the published calibration (family gpt2), nothing is a walk-back
    assert not any(f["flagged"] for f in rep["flags"] if f["value"] is not None)


@pytest.mark.parametrize("cls,cfg", [
    pytest.param("GPT2LMHeadModel", {"n_layer": 12, "n_embd": 256, "n_head": 4, "vocab_size": 1000,
                                     "n_positions": 128}, marks=pytest.mark.slow),  # ~15 s on a busy core
    ("Olmo2ForCausalLM", {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2,
                          "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000,
                          "max_position_embeddings": 128}),
])
def test_random_init_language_models_are_not_flagged_a(tmp_path, run_cli, cls, cfg):
    """The issue's sizes: 8 batches of 8 x 128 tokens. The pooled ratio flagged OLMo2 (142x); per token 15x."""
    _folder(tmp_path, cls, cfg, 128, 8, 8, 1000, "lm")
    rep = _audit(run_cli, tmp_path, "lm")
    a = next(f for f in rep["flags"] if f["id"] == "a")
    assert rep["growth_statistic"] == "per_token" and a["flagged"] is False and a["value"] < 50
    assert a["calibration"]["crossed"] is False
