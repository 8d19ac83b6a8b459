"""Hugging Face model folders, as ``save_pretrained`` writes them (docs/models.md, "Hugging Face model folders").

A folder holding ``config.json`` is read as one: the architecture is ``config.json``'s ``architectures[0]``,
built as ``transformers:<Class>`` with the config's fields as args (fadiag.models; random init, then the
folder's weights; nothing downloaded). Only classes transformers itself ships: a config that asks for remote
code (``auto_map``, ``trust_remote_code``) is refused, and no file of the folder other than the ones named
below is ever opened. The weights, in this order of preference:

- ``model.safetensors``, or ``model.safetensors.index.json`` and the shards it names (safetensors only:
  a file there that is not safetensors is refused, whatever it is called);
- ``pytorch_model.bin`` (or ``pytorch_model.bin.index.json`` and its shards), read as any torch file is
  (fadiag.checkpoint: scanned, then ``torch.load(weights_only=True)``; refused if that is unsafe, unless
  ``--trust-checkpoint``).

The model itself is built and loaded by transformers (:func:`load_transformers`): the config class from the
config's fields (``from_dict``, so its encoded floats such as ``{"__float__": "Infinity"}`` decode), then
``Class.from_pretrained(None, config=..., state_dict=...)`` with the state dict fadiag read above, offline
(``HF_HUB_OFFLINE=1``, ``local_files_only=True``), ``trust_remote_code=False``. transformers never opens a file of
the folder itself; renames between on-disk and module names (fused MoE experts, ViT attention names), tied
weights, legacy buffers, prefixes and dtypes are transformers' own loading. A weight the folder lacks (that
transformers would leave random) or one it has that the model does not use is refused (exit 2, naming them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import fadiag.checkpoint as _ck

from ..errors import CheckpointError
from .raw import RawCheckpoint, few, sha256_file

#: Weight files, in order of preference: (file, index file listing shards, the only format taken from it).
WEIGHT_FILES = (("model.safetensors", "model.safetensors.index.json", "safetensors"),
                ("pytorch_model.bin", "pytorch_model.bin.index.json", None))
#: config.json entries that describe the file, not the model: never passed to the config class.
META_KEYS = frozenset({"architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype",
                       "_commit_hash", "_attn_implementation_autoset"})
MAX_CONFIG_BYTES = 1024 * 1024
MAX_SHARDS = 10_000


def is_hf_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def read_config(folder) -> dict:
    """config.json as a dict; refuses a config that asks for remote code (exit 2, one line)."""
    p = Path(folder) / "config.json"
    src = str(p)
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"over the {MAX_CONFIG_BYTES:,}-byte limit for a config", source=src)
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"cannot read config.json ({type(e).__name__})", source=src) from None
    if not isinstance(cfg, dict):
        raise CheckpointError("config.json is not a JSON object", source=src)
    if cfg.get("auto_map") or cfg.get("trust_remote_code"):
        what = f"auto_map: {few(sorted(cfg['auto_map']))}" if isinstance(cfg.get("auto_map"), dict) else "remote code"
        raise CheckpointError(f"config.json asks for code shipped with the model ({what}); fadiag never runs a "
                              "model folder's code (no trust_remote_code): use a class transformers ships, or "
                              "pass --spec naming your own class", source=src)
    return cfg


def model_section(cfg: dict, folder) -> dict:
    """The spec's model section for a folder's config: ``transformers:<architectures[0]>`` with its fields."""
    archs = cfg.get("architectures")
    name = archs[0] if isinstance(archs, list) and archs else None
    if not (isinstance(name, str) and name.isidentifier()):
        raise CheckpointError(f"config.json names no model class (architectures: {archs!r}); pass --spec with "
                              "model.arch", source=str(Path(folder) / "config.json"))
    return {"arch": f"transformers:{name}", "args": {k: v for k, v in cfg.items() if k not in META_KEYS}}


def read_hf_folder(folder, *, trust: bool = False) -> RawCheckpoint:
    """The folder's weights as a RawCheckpoint (content: one flat state dict; format hf-safetensors or
    hf-torch; sha256 over config.json and the weight files read, in that order, each name then its digest)."""
    from .hf_guard import check_hf_folder

    check_hf_folder(folder)  # no symlink out, sizes, config depth, no remote weights or backbone (docs/safety.md)
    root = Path(folder)
    read_config(root)
    for single, index, only in WEIGHT_FILES:
        names = [single] if (root / single).is_file() else _shards(root, index) if (root / index).is_file() else None
        if names is not None:
            break
    else:
        raise CheckpointError("a Hugging Face model folder (config.json) without model.safetensors or "
                              "pytorch_model.bin", source=str(folder))
    state, digest, total, notes = {}, hashlib.sha256(), 0, []
    digest.update(b"config.json\0" + sha256_file(root / "config.json").encode())
    for n in names:
        fmt = _ck.sniff_format(root / n) if only is not None else None
        if fmt != only:  # decided before anything reads it: never unpickled, even with --trust-checkpoint
            raise CheckpointError(f"is a {fmt} file, not {only}: refusing a weight file whose name lies",
                                  source=str(root / n))
        raw = _ck.read_checkpoint(root / n, trust=trust)
        total += (root / n).stat().st_size
        if total > _ck.MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"weights over the {_ck.MAX_CHECKPOINT_BYTES:,}-byte limit", source=str(folder))
        sd, _ = _ck.find_state_dict(raw.content, source=str(root / n))
        dup = sorted(set(sd) & set(state))
        if dup:
            raise CheckpointError(f"{n} repeats tensor(s) of another shard: {few(dup)}", source=str(folder))
        state.update(sd)
        digest.update(f"{n}\0{raw.sha256}".encode())
        notes += list(raw.notes)
    fmt = "hf-safetensors" if only else "hf-torch"
    return RawCheckpoint(path=str(folder), format=fmt, sha256=digest.hexdigest(), trusted=bool(trust),
                         content=state, notes=tuple(notes))


def _shards(root: Path, index: str) -> list:
    """The shard files an index names (its weight_map's values), each a plain file name inside the folder."""
    src = str(root / index)
    try:
        wm = json.loads((root / index).read_text(encoding="utf-8")).get("weight_map")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, AttributeError) as e:
        raise CheckpointError(f"cannot read the shard index ({type(e).__name__})", source=src) from None
    if not isinstance(wm, dict) or not wm:
        raise CheckpointError("shard index has no weight_map", source=src)
    names = sorted({v for v in wm.values()}, key=str)
    bad = [v for v in names if not (isinstance(v, str) and v and Path(v).name == v and v not in (".", ".."))]
    if bad or len(names) > MAX_SHARDS:
        raise CheckpointError(f"shard index names {few(bad) if bad else f'{len(names):,} shards'}: shards are "
                              "plain file names inside the folder", source=src)
    missing = [v for v in names if not (root / v).is_file()]
    if missing:
        raise CheckpointError(f"shard(s) named by the index are missing: {few(missing)}", source=src)
    return names


def is_transformers_class(cls) -> bool:
    """A Hugging Face PreTrainedModel class (it has ``config_class`` and ``from_pretrained``)."""
    return isinstance(getattr(cls, "config_class", None), type) and callable(getattr(cls, "from_pretrained", None))


def make_config(cls, args: dict):
    """``cls.config_class`` from a config's fields (never ``trust_remote_code``; encoded floats decoded)."""
    cc = cls.config_class
    args = {k: v for k, v in args.items() if k != "trust_remote_code"}
    decode = getattr(cc, "_decode_special_floats", None)
    return cc.from_dict(decode(args) if callable(decode) else args)


@contextlib.contextmanager
def _quiet():
    """transformers offline and silent (its progress bars and load reports would go to the terminal)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers.utils import logging as tlog

    level, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()


def load_transformers(cls, args: dict, sd: dict, *, source: str):
    """The model transformers builds from ``args`` and loads from ``sd`` (see the module docstring), in the
    checkpoint's dtype (``dtype="auto"``), eval mode. Weights transformers reports missing, unexpected or
    mismatched are refused (exit 2)."""
    config = make_config(cls, args)
    with _quiet():
        model, info = cls.from_pretrained(None, config=config, state_dict=sd, output_loading_info=True,
                                          local_files_only=True, trust_remote_code=False, dtype="auto")
    problems = [f"{len(v)} {what} weight(s): {few(sorted(map(str, v)))}" for what, v in
                (("missing", info.get("missing_keys")), ("unused", info.get("unexpected_keys")),
                 ("mismatched", info.get("mismatched_keys")), ("unloadable", info.get("error_msgs"))) if v]
    if problems:
        raise CheckpointError(f"transformers loads {cls.__name__} from these weights with " + "; ".join(problems)
                              + " (a missing weight would stay random): the weights are not this model's",
                              source=source)
    return model.eval()


def fill_tied(model, sd: dict) -> list:
    """Fill the keys ``save_pretrained`` leaves out because they share storage with another parameter in the
    built model (tied embeddings): sd[k] = sd[k2] where the model's k and k2 are the same tensor. Returns the
    keys filled."""
    own = model.state_dict()
    by_ptr = {}
    for k, v in own.items():
        if k in sd and v.numel():
            by_ptr.setdefault((v.data_ptr(), tuple(v.shape)), k)
    filled = []
    for k, v in own.items():
        src = by_ptr.get((v.data_ptr(), tuple(v.shape))) if k not in sd and v.numel() else None
        if src is not None:
            sd[k] = sd[src]
            filled.append(k)
    return filled


def drop_nonpersistent(model, sd: dict) -> list:
    """Remove the keys an older transformers saved for buffers the built model keeps out of its state dict
    (non-persistent: BERT's ``embeddings.position_ids``, stored by transformers 4.x folders such as
    all-MiniLM-L6-v2). Only keys naming such a buffer are removed; returns them."""
    own = model.state_dict()
    bufs = {n for n, _ in model.named_buffers()}
    gone = [k for k in sd if k not in own and k in bufs]
    for k in gone:
        del sd[k]
    return gone
