"""Attention masks (fadiag/stream/mask.py, docs/models.md "Attention masks") on right-padded token batches.

Tiny random-init Hugging Face GPT-2 and BERT from small configs (nothing downloaded). (a) and (b) of
``fadiag audit`` on a padded batch with ``attention_mask`` in the data file are compared with two slow
references that do not use fadiag.stream: HF's own forward in float64 with the same ``attention_mask``
(h_L by a hook on the last block, pooled row by row at each row's last real token / over its real tokens),
and each row run alone without padding (what the padded numbers must equal: with the mask, padding after
the last real token changes nothing for the real tokens). BERT without the mask gives other numbers.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from _tol import tol
from test_stream import B, NB, med_norms, run, write_case

transformers = pytest.importorskip("transformers")

GPT2 = {"n_layer": 3, "n_embd": 16, "n_head": 2, "vocab_size": 23, "n_positions": 16, "bos_token_id": 0,
        "eos_token_id": 0}
GPT2_CLS = {**GPT2, "num_labels": 3, "pad_token_id": 0}
BERT = {"num_hidden_layers": 2, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32,
        "vocab_size": 23, "num_labels": 3, "max_position_embeddings": 16, "pad_token_id": 0,
        "initializer_range": 0.3}  # weights large enough that attention is not near-uniform
T = 8


def _build(cls, cfg):
    torch.manual_seed(0)
    c = getattr(transformers, cls)
    return c(c.config_class(**cfg)).eval()


def _padded(seed):
    """(ids, mask): B*NB rows of 3..T real tokens (ids 1..22), right-padded with id 0."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 23, (B * NB, T), generator=g)
    n = torch.randint(3, T + 1, (B * NB,), generator=g)
    n[0] = T  # one full row
    mask = (torch.arange(T)[None, :] < n[:, None]).long()
    return ids * mask, mask


def _case(tmp_path, model, arch, args, x, y, mask, name="m"):
    ck, sp = write_case(tmp_path, model, arch, args, x, y, name=name)
    if mask is not None:
        np.savez(tmp_path / f"{name}_data.npz", x=x.numpy(), y=y.numpy(), attention_mask=mask.numpy())
    return ck, sp


def _forward64(model, blocks, x, mask, loss):
    """HF's own float64 forward (attention_mask=mask when given): (h_0..h_L, dloss/dh_l). hidden_states[l] is
    what block l consumes; h_L comes from a hook on the last block (HF's last hidden state is after ln_f)."""
    m = copy.deepcopy(model).double().eval()
    last = []
    hk = blocks(m)[-1].register_forward_hook(lambda mod, a, o: last.append(o[0] if isinstance(o, tuple) else o))
    try:
        out = m(x, output_hidden_states=True, **({} if mask is None else {"attention_mask": mask}))
    finally:
        hk.remove()
    hs = list(out.hidden_states[:-1]) + [last[0]]
    return hs, list(torch.autograd.grad(loss(out.logits), hs))


def _lm_rows(logits, ids, mask):
    """(B,) next-token CE, mean over each row's real label positions (a loop: pads never counted)."""
    rows = []
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        z, t = logits[b, :n - 1].double(), ids[b, 1:n]
        rows.append(torch.nn.functional.cross_entropy(z, t, reduction="mean"))
    return torch.stack(rows)


def _ce(y):
    return lambda logits: torch.nn.functional.cross_entropy(logits.double(), y, reduction="none")


def _pool_rows(t, mask, how):
    """Row by row: cls token 0, last real token, mean or sum over the real tokens (right padding)."""
    out = []
    for b in range(t.shape[0]):
        n = int(mask[b].sum())
        out.append({"cls": lambda: t[b, 0], "last": lambda: t[b, n - 1], "mean": lambda: t[b, :n].mean(0),
                    "sum": lambda: t[b, :n].sum(0)}[how]())
    return torch.stack(out)


def _padded_ref(model, blocks, x, mask, row_loss, pool):
    """The padded batch through HF with its mask; pooled per row (g: the sum over tokens for mean pooling)."""
    hs, gs = _forward64(model, blocks, x, mask, lambda lg: row_loss(lg).mean())
    return [_pool_rows(h, mask, pool) for h in hs], [_pool_rows(g, mask, "sum" if pool == "mean" else pool)
                                                     for g in gs]


def _unpadded_ref(model, blocks, x, mask, row_loss_of, pool):
    """Each row alone, without padding; g of the batch-mean loss (the row's loss / B)."""
    hrows, grows = [], []
    for b in range(x.shape[0]):
        n = int(mask[b].sum())
        xb = x[b:b + 1, :n]
        hs, gs = _forward64(model, blocks, xb, None, lambda lg: row_loss_of(b, lg, xb).sum() / x.shape[0])
        full = torch.ones(1, n, dtype=torch.long)
        hrows.append([_pool_rows(h, full, pool)[0] for h in hs])
        grows.append([_pool_rows(g, full, "sum" if pool == "mean" else pool)[0] for g in gs])
    return [torch.stack(c) for c in zip(*hrows)], [torch.stack(c) for c in zip(*grows)]


def _check(rep, hs, gs):
    """fadiag's float32 forward against a float64 reference: float32 tolerance (tests/_tol.py)."""
    np.testing.assert_allclose(rep["residual_norms"], med_norms(hs), **tol("float32", atol=0))
    np.testing.assert_allclose(rep["bp_grad_norms"], med_norms(gs), **tol("float32", atol=0))


def _says_masked(rep, pool_words):
    assert rep["data"]["attention_mask"] is True
    st = rep["data"]["stream"]
    assert pool_words in st["token"] and any("attention mask" in n for n in st["notes"])


def test_gpt2_lm_padded_with_mask_equals_hf_and_the_unpadded_rows(tmp_path, run_cli):
    m = _build("GPT2LMHeadModel", GPT2)
    x, mask = _padded(1)
    ck, sp = _case(tmp_path, m, "transformers:GPT2LMHeadModel", GPT2, x, x, mask)
    rep = run(run_cli, "audit", ck, sp)
    assert rep["data"]["stream"]["pool"] == "mean" and rep["data"]["stream"]["loss"] == "lm"
    _says_masked(rep, "the mean over non-pad tokens")
    blocks = lambda mm: mm.transformer.h  # noqa: E731
    xb, mb = x[:B], mask[:B]
    _check(rep, *_padded_ref(m, blocks, xb, mb, lambda lg: _lm_rows(lg, xb, mb), "mean"))
    _check(rep, *_unpadded_ref(m, blocks, xb, mb, lambda b, lg, xr: _lm_rows(lg, xr, torch.ones_like(xr)), "mean"))
    cr = run(run_cli, "credit", ck, sp)  # the rest of the network from layer l, with the mask
    assert cr["means"]["rho"]["deep_only"] > 0.99


def _classifier(tmp_path, run_cli, cls, cfg, seed, blocks, pool):
    """A padded classification batch with its mask: the audit's (a) and (b) against both references."""
    m = _build(cls, cfg)
    x, mask = _padded(seed)
    y = torch.randint(0, 3, (B * NB,), generator=torch.Generator().manual_seed(seed + 1))
    ck, sp = _case(tmp_path, m, f"transformers:{cls}", cfg, x, y, mask)
    rep = run(run_cli, "audit", ck, sp)
    assert rep["data"]["stream"]["pool"] == pool
    xb, mb, yb = x[:B], mask[:B], y[:B]
    _check(rep, *_padded_ref(m, blocks, xb, mb, _ce(yb), pool))
    _check(rep, *_unpadded_ref(m, blocks, xb, mb, lambda b, lg, xr: _ce(yb[b:b + 1])(lg), pool))
    return rep, m, x, y, ck, sp


def test_gpt2_last_pool_reads_each_rows_last_real_token(tmp_path, run_cli):
    rep, *_, ck, sp = _classifier(tmp_path, run_cli, "GPT2ForSequenceClassification", GPT2_CLS, 2,
                                  lambda mm: mm.transformer.h, "last")
    _says_masked(rep, "the last non-pad token")
    cr = run(run_cli, "credit", ck, sp)
    assert cr["means"]["rho"]["deep_only"] > 0.99


def test_bert_needs_the_mask_and_with_it_equals_the_unpadded_rows(tmp_path, run_cli):
    rep, m, x, y, _, _ = _classifier(tmp_path, run_cli, "BertForSequenceClassification", BERT, 4,
                                     lambda mm: mm.bert.encoder.layer, "cls")
    ck2, sp2 = _case(tmp_path, m, "transformers:BertForSequenceClassification", BERT, x, y, None, name="nomask")
    bare = run(run_cli, "audit", ck2, sp2)
    assert "attention_mask" not in bare["data"]
    # post-LN BERT: every ||h_l|| is ~sqrt(d) either way; the gradients show that the pads are attended to
    got, want = np.array(bare["bp_grad_norms"]), np.array(rep["bp_grad_norms"])
    assert np.max(np.abs(got - want) / want) > 1e-2, (got, want)


def _bad(tmp_path, run_cli, mask, model=None, arch="transformers:GPT2LMHeadModel", args=GPT2, x=None):
    x = _padded(1)[0] if x is None else x
    ck, sp = _case(tmp_path, model or _build("GPT2LMHeadModel", GPT2), arch, args, x, x if x.dtype == torch.long
                   else torch.zeros(x.shape[0], dtype=torch.long), mask)
    code, out, err = run_cli(["audit", str(ck), "--spec", str(sp), "-f", "json", "-q"])
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
    return err


def test_bad_masks_are_exit_2(tmp_path, run_cli):
    x, mask = _padded(1)
    assert "same as the token ids" in _bad(tmp_path, run_cli, mask[:, :-1])
    two = mask.clone()
    two[1, 0] = 2
    assert "only 0 and 1" in _bad(tmp_path, run_cli, two)
    zero = mask.clone()
    zero[3] = 0
    assert "row 3 is all zero" in _bad(tmp_path, run_cli, zero)


def test_a_mask_for_a_model_without_attention_mask_is_exit_2(tmp_path, run_cli):
    import shutil
    from pathlib import Path

    import stream_models as SM

    shutil.copy(Path(__file__).resolve().parents[1] / "stream_models.py", tmp_path / "stream_models.py")
    torch.manual_seed(0)
    x = torch.randn(B * NB, 8)
    err = _bad(tmp_path, run_cli, torch.ones(B * NB, 8, dtype=torch.long), SM.UserResMLP(), "stream_models:UserResMLP",
               {}, x)
    assert "UserResMLP.forward takes no attention_mask" in err


def test_the_mask_is_batched_like_x_and_read_from_pt(tmp_path):
    from fadiag.data import load_arrays, make_batches
    from fadiag.stream import mask_of

    x, mask = _padded(6)
    torch.save({"x": x, "y": x, "attention_mask": mask}, tmp_path / "d.pt")
    xs, ys = load_arrays(str(tmp_path / "d.pt"), integer_labels="tokens", keep_int=True)
    assert torch.equal(mask_of(xs), mask)
    assert torch.equal(ys, x.masked_fill(mask == 0, -100))  # loss lm: pads are ignored labels
    for xb, yb in make_batches(xs, ys, 4, 3, shuffle=True, seed=1):
        rows = [int((x == r).all(1).nonzero()[0]) for r in xb]  # the rows' ids are distinct
        assert torch.equal(mask_of(xb), mask[rows]) and torch.equal(yb, ys[rows])
        assert torch.equal(mask_of(xb.repeat(2, 1)), mask[rows].repeat(2, 1))


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_masked_unpool_moves_only_the_pooled_real_tokens(pool):
    from fadiag.stream import Stream, StreamView, with_mask

    m = _build("GPT2LMHeadModel", GPT2)
    x, mask = _padded(7)
    view = StreamView(m, Stream(blocks=("transformer.h",), pool=pool, loss="lm")).for_batch(with_mask(x, mask))
    g = torch.Generator().manual_seed(8)
    base = torch.randn(x.shape[0], T, 5, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape[0], 5, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(view.pool(base), _pool_rows(base, mask, pool), **tol("float64"))
    np.testing.assert_allclose(view.pool_grad(base), _pool_rows(base, mask, "sum" if pool == "mean" else pool),
                               **tol("float64"))
    out = view.unpool(v, base)
    np.testing.assert_allclose(view.pool(out), v, **tol("float64"))
    moved = (out != base).any(-1)
    assert not bool((moved & (mask == 0)).any())  # pads keep their values
    if pool == "last":
        assert torch.equal(moved.sum(1), torch.ones(x.shape[0], dtype=torch.long))
    assert view.stream.masked and "non-pad" in view.stream.describe()["token"]
