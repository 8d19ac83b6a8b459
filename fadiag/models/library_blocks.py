"""The residual units of models that Hugging Face transformers ships, found from the library's own metadata
(docs/models.md, "Library models"); no table per model, no hard-coded module path.

:func:`hf_blocks` returns the block paths h_l is read at, in the order the model applies them, and a sentence
saying how they were found:

1. staged vision models (the config has ``depths``: Swin, ConvNeXt, ResNet, ...): the container of
   ``len(depths)`` stages, each holding a list of ``depths[i]`` blocks of one class; the blocks, never the
   stages (a stage holds its downsampling);
2. otherwise the block classes the model declares, ``_can_record_outputs["hidden_states"]`` and
   ``_no_split_modules``: every outermost module of one of those classes that is an element of a
   ModuleList/Sequential (Jamba's two layer classes in one list included);
3. otherwise the class of list elements whose count is the config's depth (``num_hidden_layers``; DeBERTa-v2).

Encoder-decoder models (``config.is_encoder_decoder``: T5, BART) are read in their decoder (the search is
inside ``get_decoder()``; the depth is ``num_decoder_layers`` / ``decoder_layers``). A layer applied several
times (ALBERT: ``num_hidden_layers`` applications of ``num_hidden_groups`` x ``inner_group_num`` layers) is
listed once per application, in the order the model applies it, so there is one h_l per application.
"""

from __future__ import annotations

import torch


def _class_names(obj) -> set:
    """Class names from a class, a name, an OutputRecorder (``target_class``) or a list of those."""
    if obj is None:
        return set()
    if isinstance(obj, (list, tuple, set)):
        return set().union(*(_class_names(o) for o in obj))
    obj = getattr(obj, "target_class", obj)
    if isinstance(obj, str):
        return {obj}
    return {obj.__name__} if isinstance(obj, type) else set()


def declared_block_classes(model) -> set:
    rec = getattr(type(model), "_can_record_outputs", None)
    names = _class_names(rec.get("hidden_states")) if isinstance(rec, dict) else set()
    nsm = getattr(model, "_no_split_modules", None)
    return names | (_class_names(list(nsm)) if isinstance(nsm, (list, tuple, set)) else set())


def _is_list(m) -> bool:
    return isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential))


def _scope(model) -> str:
    """"" or the path of the decoder of an encoder-decoder model."""
    cfg = getattr(model, "config", None)
    if not getattr(cfg, "is_encoder_decoder", False) or not callable(getattr(model, "get_decoder", None)):
        return ""
    dec = model.get_decoder()
    return next((p for p, m in model.named_modules() if m is dec), "")


def _elements(model, scope: str) -> list:
    """(path, module) of every element of a ModuleList/Sequential inside ``scope``, in module order."""
    root = model.get_submodule(scope) if scope else model
    pre = f"{scope}." if scope else ""
    out = []
    for path, m in root.named_modules():
        if _is_list(m):
            out += [(f"{pre}{path}.{n}" if path else f"{pre}{n}", c) for n, c in m.named_children()]
    order = _order(model)
    return sorted(out, key=lambda pc: order[pc[0]])


def _order(model) -> dict:
    return {p: i for i, (p, _) in enumerate(model.named_modules())}


def _outermost(paths: list) -> list:
    out = []
    for p in paths:
        if not any(p.startswith(q + ".") for q in out):
            out.append(p)
    return out


def _depth(cfg, decoder: bool):
    keys = ("num_decoder_layers", "decoder_layers", "num_hidden_layers") if decoder else ("num_hidden_layers",)
    for k in keys:
        v = getattr(cfg, k, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def _staged(model, scope: str, depths) -> list | None:
    """The blocks of a staged model: a list of len(depths) stages, stage i holding a list of depths[i] blocks of
    one class."""
    root = model.get_submodule(scope) if scope else model
    pre = f"{scope}." if scope else ""
    for path, stages in root.named_modules():
        if not (_is_list(stages) and len(stages) == len(depths)):
            continue
        found = []
        for (sname, stage), d in zip(stages.named_children(), depths):
            inner = next((f"{sname}.{p}" for p, m in stage.named_modules() if _is_list(m) and len(m) == d and
                          len({type(c) for c in m}) == 1), None)
            if inner is None:
                break
            found += [f"{inner}.{n}" for n, _ in stage.get_submodule(inner[len(sname) + 1:]).named_children()]
        else:
            return [f"{pre}{path}.{p}" if path else f"{pre}{p}" for p in found]
    return None


def _applications(cfg, paths: list) -> list | None:
    """ALBERT: num_hidden_layers applications of num_hidden_groups groups of inner_group_num layers; layer i runs
    group int(i / (num_hidden_layers / num_hidden_groups)), each of its inner layers in turn."""
    L, G, inner = (getattr(cfg, k, None) for k in ("num_hidden_layers", "num_hidden_groups", "inner_group_num"))
    if not all(isinstance(v, int) and v > 0 for v in (L, G, inner)) or len(paths) != G * inner or L * inner == len(paths):
        return None
    return [paths[int(i / (L / G)) * inner + j] for i in range(L) for j in range(inner)]


def hf_blocks(model):
    """(block paths, how they were found) for a Hugging Face model, or None (see the module docstring)."""
    cfg = getattr(model, "config", None)
    scope = _scope(model)
    where = f" in the decoder {scope!r}" if scope else ""
    depths = getattr(cfg, "depths", None)
    if isinstance(depths, (list, tuple)) and depths and all(isinstance(d, int) and d > 0 for d in depths):
        paths = _staged(model, scope, list(depths))
        if paths:
            return paths, f"config.depths {list(depths)}: the blocks of each stage, not the stages"
    elems = _elements(model, scope)
    declared = declared_block_classes(model)
    paths = _outermost([p for p, m in elems if type(m).__name__ in declared])
    how = f"block class from the model ({', '.join(sorted({type(model.get_submodule(p)).__name__ for p in paths}))})"
    if not paths:
        n = _depth(cfg, bool(scope))
        counts: dict = {}
        for p, m in elems:
            counts.setdefault(type(m).__name__, []).append(p)
        fits = [ps for ps in counts.values() if n is not None and len(ps) == n]
        paths = _outermost(sorted((p for ps in fits for p in ps), key=_order(model).get))
        how = f"the list elements that number config's depth ({n})"
    if not paths:
        return None
    shared = _applications(cfg, paths)
    if shared is not None:
        return shared, how + f"; {len(paths)} layer(s) applied {len(shared)} times (shared weights): one h_l per " \
                             "application"
    return paths, how + where


#: Attributes timm and torchvision give a block's residual branch (stochastic depth); a block flag (timm
#: ``has_skip``, torchvision ``use_res_connect``) overrides them: False means the block adds no shortcut.
_SKIP_FLAGS = ("has_skip", "use_res_connect")
_DROP_PATHS = ("drop_path", "drop_path1", "stochastic_depth")


def residual_units(model) -> list | None:
    """The outermost modules timm or torchvision mark as residual units (a skip flag that is True, or, with no
    flag, a stochastic-depth attribute on the residual branch), in module order; None when fewer than 2. Blocks
    whose flag is False (a stride or width change with no shortcut) are not units: they are part of the map
    from one unit's output to the next unit's input."""
    units: list = []
    for path, m in model.named_modules():
        if not path or any(path.startswith(u + ".") for u in units):
            continue
        flag = next((getattr(m, f) for f in _SKIP_FLAGS if isinstance(getattr(m, f, None), bool)), None)
        if flag is True or (flag is None and any(hasattr(m, a) for a in _DROP_PATHS)):
            units.append(path)
    return units if len(units) >= 2 else None
