"""Where the residual stream is, for the families people train (docs/models.md).

:func:`resolve_view` turns a model plus the spec's ``stream:`` section into a :class:`~fadiag.stream.StreamView`:

- a ``stream:`` mapping with ``blocks`` describes the stream itself;
- otherwise a preset is recognised from the model's layout (duck-typed, so no library is imported here):
  fadiag's reference contract (``embed``/``patch_embed``, ``blocks``, ``out_ln``+``out_head`` or
  ``norm``+``head``; residual outside), timm VisionTransformer (``blocks``; h_0 = output of ``norm_pre``;
  cls token, or the mean after ``num_prefix_tokens`` when ``global_pool='avg'``), Hugging Face models
  (blocks from the library's metadata, fadiag.models.library_blocks.hf_blocks, never a hard-coded path;
  decoders read the last token, or the token mean with ``loss: lm``; encoders the class token;
  encoder-decoders their decoder, fadiag.stream.seq2seq), torchvision ResNet (``layer1..layer4``: the
  stream is per stage and changes width), torchvision VisionTransformer, and the residual units timm and
  torchvision mark (fadiag.models.library_blocks.residual_units);
- ``stream: auto`` picks the finest repeated residual unit (the same library rules), else a single
  ModuleList of identical blocks, and says which it chose;
- keys given beside a preset or auto (pool, residual, output_index, readout, embed) override it.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import SpecError
from ..stream.spec import Stream, _compact, expand_blocks
from ..stream.view import StreamView

_DECODER_TYPES = ("gpt2", "gpt_neo", "gptj", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi",
                  "phi3", "opt", "falcon", "olmo", "smollm3", "gpt_neox", "bloom")


def _is_lm_class(model) -> bool:
    """A causal LM, or an encoder-decoder LM (fadiag.stream.seq2seq): its labels are (B, T) tokens."""
    from ..stream.seq2seq import is_encoder_decoder

    n = type(model).__name__
    return n.endswith(("LMHeadModel", "ForCausalLM")) or (n.endswith("ForConditionalGeneration")
                                                          and is_encoder_decoder(model))


def preset_for(model, loss: str | None):
    """(Stream, default loss) for a recognised family, or None."""
    has = lambda *names: all(hasattr(model, n) for n in names)  # noqa: E731
    cfg = getattr(model, "config", None)
    if has("blocks", "norm_pre", "num_prefix_tokens", "global_pool"):  # timm VisionTransformer layout
        gp = getattr(model, "global_pool", "token")
        pool, k = ("cls", 0) if gp == "token" else ("mean", int(model.num_prefix_tokens))
        note = f"timm global_pool={gp!r}: " + ("the head reads the class token" if pool == "cls" else
                                              f"the head reads the token mean after {k} prefix token(s)")
        return Stream(blocks=("blocks",), embed="norm_pre", residual="inside", readout="model", pool=pool,
                      prefix_tokens=k, source="preset: timm VisionTransformer", notes=(note,)), "ce"
    if cfg is not None and hasattr(type(model), "config_class"):  # Hugging Face PreTrainedModel
        return _hf_preset(model, cfg, loss)
    if has("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc"):  # torchvision ResNet
        return Stream(blocks=("layer1", "layer2", "layer3", "layer4"), embed="maxpool", residual="inside",
                      readout="model", pool="none", source="preset: torchvision ResNet",
                      notes=("the stream is per stage: h_0 = output of maxpool, then every residual block of "
                             "layer1..layer4; width changes between stages, so (a) is per stage and (f) is N/A "
                             "across a width change",)), "ce"
    if has("blocks") and (has("embed") or has("patch_embed")) and (has("out_ln", "out_head") or has("norm", "head")):
        embed = "embed" if has("embed") else "patch_embed"
        ro = ("out_ln", "out_head") if has("out_ln", "out_head") else ("norm", "head")
        return Stream(blocks=("blocks",), embed=embed, residual="outside", readout=ro, pool="cls",
                      source="reference contract"), "ce"
    return _library_preset(model)


def _library_preset(model):
    """torchvision VisionTransformer (class_token, encoder.layers), then the residual units timm and torchvision
    mark (fadiag.models.library_blocks.residual_units: ConvNeXt, EfficientNet, MobileNetV3, Swin, RegNet, ...)."""
    from .library_blocks import residual_units

    if all(hasattr(model, n) for n in ("class_token", "conv_proj", "heads")) and \
            hasattr(getattr(model, "encoder", None), "layers"):
        return Stream(blocks=("encoder.layers",), residual="inside", readout="model", pool="cls",
                      source="preset: torchvision VisionTransformer",
                      notes=("the head reads the class token (token 0)",)), "ce"
    units = residual_units(model)
    if units is None:
        return None
    return Stream(blocks=tuple(units), residual="inside", readout="model", pool="mean",
                  source=f"preset: residual units of {type(model).__name__}",
                  notes=(_UNITS_NOTE,)), "ce"


_UNITS_NOTE = ("blocks: every outermost module the library marks as a residual unit (has_skip / use_res_connect "
               "true, or stochastic depth on its branch), never a stage; blocks without a shortcut (stride or "
               "width changes) lie between units; (B, C, H, W) and (B, H, W, C) states are flattened, token states "
               "(B, T, d) read as their token mean")


def _hf_preset(model, cfg, loss):
    from .library_blocks import hf_blocks
    from ..stream.seq2seq import attach, is_encoder_decoder

    attach(model)  # no-op unless an encoder-decoder (fadiag.stream.seq2seq)
    found = hf_blocks(model)
    if found is None:
        return None
    paths, how = found
    mt = str(getattr(cfg, "model_type", ""))
    decoder = _is_lm_class(model) or mt in _DECODER_TYPES or bool(getattr(cfg, "is_decoder", False))
    default_loss = "lm" if _is_lm_class(model) else "ce"
    use = loss or default_loss
    vision_no_cls = hasattr(cfg, "num_channels") and not any(n.endswith("cls_token") for n, _ in
                                                             model.named_parameters())
    pool = ("mean" if use == "lm" else "last") if decoder else "mean" if vision_no_cls else "cls"
    notes = [f"Hugging Face {mt or type(model).__name__}: {len(paths)} blocks ({how}); h_L is the last block's "
             "output, before the final norm (never hidden_states[-1])"]
    if vision_no_cls:
        notes.append("no class token (no cls_token parameter): a token state is read as its token mean")
    if is_encoder_decoder(model):
        notes.append("encoder-decoder: the decoder's blocks; the decoder is fed (start token, x) and its logits at "
                     "positions 1..T are scored against the labels shifted once, as a causal LM's (labels must be x)")
    return Stream(blocks=tuple(paths), residual="inside", readout="model", pool=pool,
                  source=f"preset: Hugging Face {type(model).__name__}", notes=tuple(notes)), default_loss


def auto_stream(model):
    """The finest repeated residual unit: a Hugging Face model's blocks (fadiag.models.library_blocks.hf_blocks), the
    residual units timm / torchvision mark, else the single ModuleList of >= 2 identical blocks (nested lists
    inside a block are ignored)."""
    import torch

    from .library_blocks import hf_blocks, residual_units

    found = hf_blocks(model) if hasattr(type(model), "config_class") else None
    units = found[0] if found else residual_units(model)
    if units:
        how = found[1] if found else "marked by the library as residual units"
        return Stream(blocks=tuple(units), residual="auto", readout="model", pool="cls",
                      source=f"auto: {len(units)} blocks {_compact(list(units))!r} ({how})")
    cands = []
    for path, m in model.named_modules():
        if isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential)) and len(m) >= 2 and path:
            kinds = {type(c).__name__ for c in m}
            if len(kinds) == 1 and not any(path.startswith(c + ".") for c, _ in cands):
                cands.append((path, kinds.pop()))
    if len(cands) != 1:
        names = ", ".join(f"{p} ({len(model.get_submodule(p))} x {k})" for p, k in cands) or "none"
        raise SpecError(f"stream: auto found {len(cands)} candidate block lists ({names}); name one with "
                        "stream.blocks", source="stream")
    path, kind = cands[0]
    return Stream(blocks=(path,), residual="auto", readout="model", pool="cls",
                  source=f"auto: the only ModuleList of identical blocks, {path!r} ({kind})")


def _auto_fallback(model) -> tuple:
    """No preset matches: the single ModuleList of identical blocks (stream: auto), said in the report."""
    try:
        st = auto_stream(model)
    except SpecError as e:
        raise SpecError(f"cannot find the residual stream of {type(model).__name__}: no preset matches and {e} "
                        "(stream.blocks names the block list; see docs/models.md), or honour the reference "
                        f"contract {CONTRACT_HINT}", source="stream") from None
    return replace(st, source=f"no preset matches; {st.source}"), "ce"


def resolve_view(model, sspec=None, loss: str | None = None, labels_shifted=None) -> StreamView:
    """model + the spec's stream section (a fadiag.spec.StreamSpec or None) + loss (+ data.labels_shifted:
    true, false, or None/"auto" to measure) -> StreamView. What the spec leaves out is the preset's reading,
    checked on the first batch (fadiag.stream.readings)."""
    preset = getattr(sspec, "preset", "") if sspec is not None else ""
    if sspec is not None and sspec.blocks is not None:
        base, dloss = Stream(blocks=(), source="spec"), "ce"
    elif preset == "auto":
        base, dloss = auto_stream(model), "ce"
    else:
        found = preset_for(model, loss)
        if found is None:
            found = _auto_fallback(model)
        base, dloss = found
    # what the spec does not say is the preset's reading: measured on the first batch (fadiag.stream.readings)
    kind = "preset" if base.source.startswith(("preset", "reference")) else "default"
    over = {"pool_from": kind, "residual_from": kind}
    if sspec is not None:
        if sspec.blocks is not None:
            over["blocks"] = expand_blocks(model, sspec.blocks)
        for k in ("embed", "residual", "output_index", "pool", "prefix_tokens"):
            v = getattr(sspec, k)
            if v is not None:
                over[k] = v
                if k in ("pool", "residual"):
                    over[f"{k}_from"] = "spec"
        if sspec.readout is not None:
            ro = sspec.readout
            if ro == "probe":
                over["logits_from"] = "probe"
            else:
                over["readout"] = ro if ro == "model" else ((ro,) if isinstance(ro, str) else tuple(ro))
    if labels_shifted is not None and labels_shifted != "auto":
        over["labels_shifted"] = bool(labels_shifted)
    st = replace(base, **over, loss=loss or dloss)
    if "blocks" not in over:
        st = replace(st, blocks=expand_blocks(model, list(st.blocks)))
    return StreamView(model, st)


CONTRACT_HINT = "(embed, blocks with h + block(h), out_ln/out_head, model(x, return_hidden=True))"
