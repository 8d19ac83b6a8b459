"""A tiny Hugging Face causal LM and its token data, for the callback tests and benchmarks/bench_callbacks.py
(needs transformers). Seeded; nothing downloaded: the model is built from a config, the tokens drawn."""

from __future__ import annotations

import numpy as np
import torch


def tokens(rows: int, length: int, vocab: int, seed: int = 0) -> np.ndarray:
    """(rows, length) int64 token ids, uniform over the vocabulary."""
    return np.random.default_rng(seed).integers(0, vocab, size=(rows, length)).astype(np.int64)


class TokenRows(torch.utils.data.Dataset):
    """Rows of token ids as a Trainer dataset: each item {"input_ids": t, "labels": t} (the model shifts)."""

    def __init__(self, tok: np.ndarray):
        self.tok = tok

    def __len__(self):
        return len(self.tok)

    def __getitem__(self, i):
        t = torch.from_numpy(self.tok[i])
        return {"input_ids": t, "labels": t}


def tiny_gpt2(vocab: int, length: int, width: int, layers: int, heads: int, seed: int = 0):
    """A GPT-2 LM head model at a fresh seeded initialisation."""
    import transformers as tf

    torch.manual_seed(seed)
    return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=vocab, n_positions=length, n_embd=width, n_layer=layers,
                                            n_head=heads, bos_token_id=0, eos_token_id=0))
