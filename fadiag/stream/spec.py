"""What a residual stream is: the :class:`Stream` description, module paths, logits and per-sample losses,
and the token pooling that turns a state into one vector per sample (docs/models.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ..errors import SpecError
from .mask import last_index
from .xent import cross_entropy_rows

POOLS = ("cls", "mean", "last", "none")
RESIDUALS = ("auto", "inside", "outside")
LOSSES = ("ce", "lm", "mse")
CONTRACT = "model(x, return_hidden=True) -> (logits, [h_0..h_L])"


@dataclass(frozen=True)
class Stream:
    """A resolved description of a model's residual stream (every path relative to the model)."""

    blocks: tuple
    """Block module paths, in order; h_{l+1} = what block l hands on."""
    embed: str | None = None
    """Module whose output is h_0 (needed for residual: outside; trained by the frozen baseline)."""
    residual: str = "auto"
    output_index: int = 0
    readout: object = "model"
    """Tuple of module paths applied after the last block, or "model" (the model's own forward)."""
    pool: str = "cls"
    prefix_tokens: int = 0
    """Tokens before the pooled ones (pool: mean skips them: timm's num_prefix_tokens)."""
    loss: str = "ce"
    source: str = "spec"
    """Where the description came from: "spec", "preset: <family>", "auto: ...", "reference contract"."""
    notes: tuple = field(default_factory=tuple)
    masked: bool = False
    """The batches carry an attention mask (fadiag.stream.mask): last/mean pool the non-pad tokens only."""
    causal: Optional[bool] = None
    """Token models: measured on the first batch (does changing the last token move token 0?); None: not measured."""
    labels_shifted: Optional[bool] = None
    """loss lm: True when y[:, t] is already the token after x[:, t] (not shifted again); None: measure."""
    logits_from: str = "model"
    """model (its own output), readout (the readout modules on h_L) or probe (a linear probe on pooled h_L)."""
    pool_from: str = "spec"
    """spec (the user's word, kept) or preset/default (decided per architecture on the first batch)."""
    residual_from: str = "spec"
    """spec (declared: a contradicting batch is bad input) or preset/default (measured, this is the fallback)."""
    why: tuple = ()
    """(what, reason) pairs: how each inference was made (the "read as" line, fadiag.stream.readings)."""
    probe: Optional[dict] = None
    """readout probe: what was fitted (fadiag.stream.probe)."""
    token_states: Optional[bool] = None
    """Set on the first batch: does any h_l have token states (B, T, d)? (False: pooling does not apply.)"""

    def describe(self) -> dict:
        real = " non-pad" if self.masked else ""
        token = {"cls": "token 0 (class token)", "last": f"the last{real} token", "mean": f"the mean over{real} tokens"
                 + (f" after {self.prefix_tokens} prefix token(s)" if self.prefix_tokens else ""),
                 "none": "the whole state, flattened"}[self.pool]
        notes = list(self.notes) + (["attention mask: the model is called with attention_mask; pool "
                                     f"{self.pool} reads {token}; loss lm ignores pad positions"]
                                    if self.masked else [])
        blocks = list(self.blocks)
        return {"source": self.source, "embed": self.embed, "blocks": _compact(blocks), "n_blocks": len(blocks),
                "residual": self.residual, "output_index": self.output_index,
                "readout": self.readout if isinstance(self.readout, str) else list(self.readout),
                "pool": self.pool, "token": token + " for token states (B, T, d); (B, ...) states are flattened",
                "loss": self.loss, "notes": notes, "causal": self.causal, "labels_shifted": self.labels_shifted,
                "logits": self.logits_from, "probe": self.probe, "read_as": read_as(self)}


def _compact(paths: list) -> str:
    """["blocks.0", "blocks.1"] -> "blocks.0..1"; mixed parents are listed."""
    if not paths:
        return ""
    if len(set(paths)) < len(paths):  # a module applied several times (ALBERT): one entry per application
        return f"{_compact(list(dict.fromkeys(paths)))} applied {len(paths)} times"
    heads = {p.rpartition(".")[0] for p in paths}
    if len(heads) == 1 and all(p.rpartition(".")[2].isdigit() for p in paths):
        h = heads.pop()
        return f"{h}.{paths[0].rpartition('.')[2]}..{paths[-1].rpartition('.')[2]}"
    return ", ".join(paths)


def read_as(stream) -> str:
    """One line: every inference about the model and how it was made (the table's "read as" line)."""
    why = dict(stream.why)
    res = next((n for n in reversed(stream.notes) if str(n).startswith("residual ")), f"residual {stream.residual}")
    parts = [f"blocks {_compact(list(stream.blocks))} ({stream.source})", res]
    if "causal" in why:
        parts.append(why["causal"])
    if stream.token_states is False:
        parts.append("no token pooling (no state is (B, T, d))")
    else:
        parts.append(f"pool {stream.pool} ({why.get('pool', stream.pool_from)})")
    loss = f"loss {stream.loss}"
    if "labels" in why:
        loss += f", labels {why['labels']}"
    parts.append(loss)
    if stream.logits_from == "probe" and stream.probe:
        parts.append(f"logits from a probe: {stream.probe.get('name', 'linear probe')}")
    elif "logits" in why:
        parts.append(f"logits {why['logits']}")
    else:
        parts.append("logits: the model's own output")
    return "; ".join(parts)


def _sub(model, path: str, what: str):
    try:
        return model.get_submodule(path) if path else model
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise SpecError(f"stream.{what}: the model has no module {path!r} (top-level modules: "
                        f"{', '.join(names[:12]) or 'none'})", source="stream") from None


def expand_blocks(model, blocks) -> tuple:
    """A path (or list of paths) -> block paths: a ModuleList/Sequential stands for its children."""
    paths = [blocks] if isinstance(blocks, str) else list(blocks or [])
    out = []
    for p in paths:
        if not isinstance(p, str):
            raise SpecError(f"stream.blocks: expected module paths, got {p!r}", source="stream")
        m = _sub(model, p, "blocks")
        if isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential)):
            out += [f"{p}.{n}" if p else n for n, _ in m.named_children()]
        else:
            out.append(p)
    if not out:
        raise SpecError("stream.blocks: no blocks (an empty ModuleList?)", source="stream")
    return tuple(out)


def logits_of(out):
    """A model's output -> the logits tensor: a tensor, a Hugging Face output's .logits, or a tuple's first."""
    if isinstance(out, torch.Tensor):
        return out
    lg = getattr(out, "logits", None)
    if isinstance(lg, torch.Tensor):
        return lg
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise SpecError(f"the model returned {type(out).__name__}, not logits (a tensor, .logits, or a tuple); a model "
                    "without a head: stream.readout: probe fits a linear probe on h_L (docs/models.md)",
                    source="model.arch")


def per_sample_loss(logits, y, loss: str, shifted: bool = False):
    """(B,) per-sample loss in float64. ce: cross-entropy; lm: next-token CE, mean over each row's labelled
    positions (label -100 = ignored; ``shifted``: y[:, t] already is the token after x[:, t], so logits[:, t]
    is scored against y[:, t], not y[:, t + 1]); mse: mean squared error over each row's outputs. Cross-entropy
    of float32 logits is computed at float32 cost without losing saturated rows (fadiag.stream.xent)."""
    z = logits
    if loss == "ce":
        if z.dim() != 2:
            raise SpecError(f"loss: ce needs (B, classes) logits, the model gives {tuple(z.shape)} "
                            "(loss: lm for a language model)", source="loss")
        return cross_entropy_rows(z, y)
    if loss == "lm":
        if z.dim() != 3 or y.dim() != 2 or y.shape[:2] != z.shape[:2]:
            raise SpecError(f"loss: lm needs (B, T, vocab) logits and (B, T) labels, got {tuple(z.shape)} and "
                            f"{tuple(y.shape)}", source="loss")
        if shifted:  # y[:, t] is already the token after x[:, t]
            yy = y
            ce = cross_entropy_rows(z.reshape(-1, z.shape[-1]), yy.reshape(-1)).view(yy.shape)
        else:
            yy = torch.full_like(y, -100)  # position t predicts label t + 1; no copy of the logits
            yy[:, :-1] = y[:, 1:]
            ce = cross_entropy_rows(z.reshape(-1, z.shape[-1]), yy.reshape(-1))
            ce, yy = ce.view(yy.shape)[:, :-1], yy[:, :-1]
        n = (yy != -100).sum(1)
        return ce.sum(1) / n.clamp(min=1)
    z = logits.double()
    t = y.double().reshape(z.shape) if y.numel() == z.numel() else y.double()
    if tuple(t.shape) != tuple(z.shape):
        raise SpecError(f"loss: mse needs targets shaped like the model's output {tuple(z.shape)}, got "
                        f"{tuple(y.shape)} (a model without a head: stream.readout: probe with loss ce)", source="loss")
    return ((z - t) ** 2).flatten(1).mean(1)


def accuracy(logits_list: list, y_list: list, loss: str = "ce", shifted: bool = False) -> float:
    """Classification accuracy; for loss lm, next-token accuracy over the labelled positions (``shifted``: as
    in per_sample_loss)."""
    counts = [accuracy_counts(lg, y, loss, shifted) for lg, y in zip(logits_list, y_list)]
    return pooled_accuracy(counts)


def accuracy_counts(lg, y, loss: str = "ce", shifted: bool = False) -> tuple:
    """(correct, total) of one batch, for :func:`accuracy` pooled over batches (no batch's logits kept)."""
    if loss == "lm":
        pred, yy = (lg.argmax(-1), y) if shifted else (lg[:, :-1].argmax(-1), y[:, 1:])
        keep = yy != -100
        return int((pred[keep] == yy[keep]).sum()), int(keep.sum())
    return int((lg.argmax(-1) == y).sum()), int(y.numel())


def pooled_accuracy(counts) -> float:
    """sum(correct) / sum(total) over (correct, total) pairs; NaN when nothing was labelled."""
    correct, total = sum(c for c, _ in counts), sum(n for _, n in counts)
    return correct / total if total else float("nan")


def pool_state(h: torch.Tensor, pool: str = "cls", prefix_tokens: int = 0, mask=None) -> torch.Tensor:
    """One vector per sample: a (B, T, d) state -> (B, d) by ``pool`` (cls: token 0, last: token T-1, mean: the
    mean over the tokens after ``prefix_tokens``); ``none`` or a (B, ...) state that is not (B, T, d) is
    flattened; (B, d) is returned as is. With an attention ``mask`` (B, T) of 0/1, last is each row's last
    token with mask 1 and mean the mean over its tokens with mask 1 (docs/models.md, "Attention masks")."""
    if h.dim() != 3 or pool == "none":
        return h.reshape(h.shape[0], -1) if h.dim() != 2 else h
    w = token_weights(h, mask, prefix_tokens)
    if pool == "cls":
        return h[:, 0]
    if pool == "last":
        return h[:, -1] if w is None else h[torch.arange(h.shape[0], device=h.device), last_index(mask)]
    if w is None:
        return h[:, prefix_tokens:].mean(1)
    return (h[:, prefix_tokens:] * w).sum(1) / w.sum(1).clamp(min=1)


def token_norms(h: torch.Tensor, prefix_tokens: int = 0, mask=None):
    """(B,) float64: per sample, the mean over its tokens (after ``prefix_tokens``; with an attention mask only
    those with mask 1) of each token's L2 norm ||h[b, t]||. None for a state that is not (B, T, d). What (a)
    reads on token models (docs/science.md §1 (a)): no pooling before the norm, so the scale of h_0 is the
    scale of a token, not of an average of T tokens."""
    if h.dim() != 3:
        return None
    n = h[:, prefix_tokens:].double().norm(dim=-1)
    w = token_weights(h, mask, prefix_tokens)
    if w is None:
        return n.mean(1)
    w = w.squeeze(-1).double()
    return (n * w).sum(1) / w.sum(1).clamp(min=1)


def token_weights(h, mask, prefix_tokens: int = 0):
    """(B, T - prefix_tokens, 1) 0/1 weights of the pooled tokens of ``h`` from its attention mask (None without
    a mask, or when the mask is not (B, T) of h)."""
    if mask is None or h.dim() != 3 or tuple(mask.shape) != tuple(h.shape[:2]):
        return None
    return (mask[:, prefix_tokens:] != 0).to(device=h.device, dtype=h.dtype).unsqueeze(-1)


def per_sample(h: torch.Tensor) -> torch.Tensor:
    """(B, d) as is; (B, T, d) -> the class token (B, d); (B, ...) else flattened (pool: cls)."""
    return pool_state(h, "cls")
