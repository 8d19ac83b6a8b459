"""Read an alberta-framework checkpoint folder (``save_checkpoint(state, path, metadata)``) without JAX.

alberta-framework saves a ``MultiHeadMLPState`` with orbax: a folder holding ``state/`` (the arrays, in
zarr inside an OCDBT key-value store, with the tree in ``state/_METADATA``) and ``metadata/metadata``
(JSON: the user metadata, e.g. ``{"learner_config": learner.to_config()}``). The arrays are read with
``tensorstore`` (the optional ``alberta`` extra: ``pip install "fadiag[alberta]"``; no JAX, no orbax) and
mapped to fadiag's multihead keys (fadiag.models.multihead):

    trunk_params.weights.i / biases.i               -> trunk.i.weight / trunk.i.bias
    head_params.weights.h (1, H) / biases.h (1,)    -> rows of heads.weight (n_heads, H) / heads.bias
    normalizer_state.mean / var / sample_count      -> norm_mean / norm_var / norm_count
    trunk_optimizer_states.0.step_sizes (Autostep)  -> step_sizes.trunk.0.weight
    trunk_optimizer_states.0.log_step_sizes (IDBD)  -> log_step_sizes.trunk.0.weight
    trunk_optimizer_states.0.step_size (LMS)        -> step_size (a scalar), or the weight's shape filled
    head_optimizer_states.h.0.*                     -> the same for heads.weight (row h)
    trunk_traces.0                                  -> traces.trunk.0.weight

The model spec comes from the folder itself: widths from the arrays; ``use_layer_norm``,
``leaky_relu_slope`` and the normaliser's ``epsilon`` from ``metadata.learner_config``. Without a
``learner_config`` those are unknown and the folder is refused unless ``--spec`` gives ``model.args``
(the Jacobian tier depends on them).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, SpecError

MAX_LEAVES = 100_000
MAX_ARRAY_BYTES = 2 * 1024**3


#: The content key under which read_folder hands the metadata's feature/head names to ``fadiag relevance``.
METADATA_NAMES = "alberta_metadata_names"


def is_alberta_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "state" / "_METADATA").is_file()


def folder_sha256(path, files: list | None = None) -> str:
    """sha256 over the folder's files in sorted relative-path order (each path, then its bytes). ``files``:
    the folder's listing by fadiag.checkpoint.folders.folder_files (which checks it), made here if not given."""
    from .folders import folder_files

    h = hashlib.sha256()
    for rel, real, _ in (files if files is not None else folder_files(path)):
        h.update(rel.encode() + b"\0")
        with open(real, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _json(p: Path, src: str):
    from .folders import load_json

    return load_json(p, src, name=str(p.relative_to(p.parents[1])), want=object)


def read_tree(path, files: list | None = None) -> tuple[dict, dict]:
    """{dotted key path: numpy array} of every array leaf, and the user metadata dict ({} if none). The folder
    is checked first (fadiag.checkpoint.folders: no symlink out, sizes within the checkpoint limit), the
    metadata JSON by depth and type, and every array's declared size before any is read (:func:`_open_arrays`)."""
    from .folders import folder_files

    root = Path(path)
    src = str(path)
    files = folder_files(root, src=src) if files is None else files
    meta = _json(root / "state" / "_METADATA", src)
    tree = meta.get("tree_metadata") if isinstance(meta, dict) else None
    if not isinstance(tree, dict) or len(tree) > MAX_LEAVES:
        raise CheckpointError("state/_METADATA has no usable tree_metadata", source=src)
    try:
        import tensorstore as ts
    except ImportError:
        raise CheckpointError("reading an alberta-framework (orbax) checkpoint folder needs tensorstore: "
                              'pip install "fadiag[alberta]"', source=src) from None
    arrays = _open_arrays(ts, root, meta, tree, src, on_disk=sum(size for _, _, size in files))
    out = {}
    for name, arr in arrays.items():
        try:
            out[name] = np.asarray(arr.read().result())
        except Exception as e:
            raise CheckpointError(f"cannot read array {name} ({type(e).__name__})", source=src) from None
    user = {}
    mpath = root / "metadata" / "metadata"
    if mpath.is_file():
        user = _json(mpath, src)
        if not isinstance(user, dict):
            user = {}
    return out, user


def _leaf_name(entry, src: str) -> str | None:
    """The dotted key of an array leaf of tree_metadata, None for a leaf that is not an array."""
    km = entry.get("key_metadata") if isinstance(entry, dict) else None
    vm = entry.get("value_metadata") if isinstance(entry, dict) else None
    vm = {} if vm is None else vm
    if not isinstance(km, list) or not isinstance(vm, dict) or not all(
            isinstance(k, dict) and isinstance(k.get("key"), (str, int)) and not isinstance(k.get("key"), bool)
            for k in km):
        raise CheckpointError("state/_METADATA: malformed tree entry", source=src)
    vt = vm.get("value_type", "")
    if vm.get("skip_deserialize") is True or not isinstance(vt, str) or not vt.endswith(("Array", "ndarray")):
        return None
    parts = [str(k["key"]) for k in km]
    name = ".".join(parts)
    if not parts or any(p in ("", ".", "..") or "/" in p or "\\" in p for p in parts):
        raise CheckpointError(f"state/_METADATA: unsafe key {name!r}", source=src)
    return name


def _open_arrays(ts, root: Path, meta: dict, tree: dict, src: str, on_disk: int) -> dict:
    """{name: opened tensorstore} of every array leaf, nothing read yet: each array, each of its chunks and all
    of them together are held to the limits first (a few KB of metadata may declare terabytes)."""
    import fadiag.checkpoint.limits as _ck

    driver = "zarr3" if meta.get("use_zarr3") is True else "zarr"
    state_dir = (root / "state").resolve()
    arrays, declared = {}, 0
    for entry in tree.values():
        name = _leaf_name(entry, src)
        if name is None:
            continue
        if meta.get("use_ocdbt", True) is not False:
            kv = {"driver": "ocdbt", "base": state_dir.as_uri() + "/", "path": name}
        else:
            kv = {"driver": "file", "path": str(state_dir / name)}
        try:
            arr = ts.open({"driver": driver, "kvstore": kv}, open=True, read=True).result()
            item = int(arr.dtype.numpy_dtype.itemsize)
            nbytes = int(np.prod(arr.shape, dtype=np.float64)) * item
            chunk = arr.chunk_layout.read_chunk.shape
            cbytes = int(np.prod(chunk, dtype=np.float64)) * item if chunk is not None else 0
        except Exception as e:
            raise CheckpointError(f"cannot read array {name} ({type(e).__name__})", source=src) from None
        if nbytes > MAX_ARRAY_BYTES:
            raise CheckpointError(f"array {name} is over the {MAX_ARRAY_BYTES}-byte limit", source=src)
        if cbytes > max(2 * nbytes, 1 << 26):
            raise CheckpointError(f"array {name} declares chunks of {cbytes:,} bytes for {nbytes:,} bytes of data: "
                                  "refusing to allocate them", source=src)
        declared += nbytes
        if declared > _ck.MAX_CHECKPOINT_BYTES or (declared > _ck.MAX_ZIP_EXPANDED
                                                   and declared > _ck.MAX_ZIP_RATIO * max(on_disk, 1)):
            raise CheckpointError(f"the arrays declare over {declared:,} bytes from {on_disk:,} bytes on disk (the "
                                  f"limits: {_ck.MAX_CHECKPOINT_BYTES:,} bytes, or {_ck.MAX_ZIP_RATIO}x past "
                                  f"{_ck.MAX_ZIP_EXPANDED:,}): refusing to read them", source=src)
        arrays[name] = arr
    return arrays


def _indexed(tree: dict, prefix: str) -> list:
    """tree[prefix + '0'], tree[prefix + '1'], ... while present."""
    out = []
    while f"{prefix}{len(out)}" in tree:
        out.append(tree[f"{prefix}{len(out)}"])
    return out


def to_fadiag_state(tree: dict, src: str = "<alberta>") -> tuple[dict, dict]:
    """(module state dict, learner extras) in fadiag's multihead keys, as numpy arrays."""
    tw = _indexed(tree, "trunk_params.weights.")
    tb = _indexed(tree, "trunk_params.biases.")
    hw = _indexed(tree, "head_params.weights.")
    hb = _indexed(tree, "head_params.biases.")
    if not hw or len(hb) != len(hw) or len(tb) != len(tw):
        raise CheckpointError("not a MultiHeadMLPState (no head_params.weights.0, or weights and biases differ "
                              "in number)", source=src)
    if any(w.ndim != 2 or w.shape[0] != 1 for w in hw):
        raise CheckpointError("head weights must each be (1, H)", source=src)
    module = {}
    for i, (w, b) in enumerate(zip(tw, tb)):
        module[f"trunk.{i}.weight"], module[f"trunk.{i}.bias"] = w, b
    module["heads.weight"] = np.concatenate(hw, 0)
    module["heads.bias"] = np.concatenate([np.reshape(b, (-1,)) for b in hb], 0)
    if "normalizer_state.mean" in tree:
        module["norm_mean"] = tree["normalizer_state.mean"]
        module["norm_var"] = tree["normalizer_state.var"]
        count = tree.get("normalizer_state.sample_count", tree.get("normalizer_state.count", np.array(0)))
        module["norm_count"] = np.asarray(count).astype(np.int64).reshape(())
    extras = {}
    in_name = "trunk.0.weight" if tw else "heads.weight"
    layers = {in_name: "trunk_optimizer_states.0." if tw else None, "heads.weight": None}
    scalars = {}
    for name in dict.fromkeys((in_name, "heads.weight")):
        if name == "heads.weight":
            states = [f"head_optimizer_states.{h}.0." for h in range(len(hw))]
        else:
            states = [layers[name]]
        for field, key in (("step_sizes", "step_sizes."), ("log_step_sizes", "log_step_sizes.")):
            got = [tree.get(s + field) for s in states]
            if all(g is not None for g in got):
                extras[key + name] = np.concatenate([np.reshape(g, (-1, g.shape[-1])) for g in got], 0) \
                    if name == "heads.weight" else got[0]
                break
        else:
            got = [tree.get(s + "step_size") for s in states]
            if all(g is not None for g in got):
                vals = np.array([float(np.asarray(g)) for g in got])
                scalars[name] = vals
    # LMS: one scalar when it is the same everywhere, else per-weight arrays holding each layer's value
    flat_vals = {float(v) for vals in scalars.values() for v in vals}
    if len(flat_vals) == 1:
        extras["step_size"] = np.asarray(flat_vals.pop(), dtype=np.float32)
    else:
        for name, vals in scalars.items():
            shape = module[name].shape
            extras["step_sizes." + name] = np.repeat(vals[:, None], shape[1], 1) if name == "heads.weight" \
                else np.full(shape, vals[0])
    if tw and "trunk_traces.0" in tree:
        extras["traces.trunk.0.weight"] = tree["trunk_traces.0"]
    return module, extras


def spec_from_config(module: dict, config: dict | None, src: str) -> dict:
    """A fadiag spec dict for the folder (model section), from the arrays and ``learner_config``."""
    if not isinstance(config, dict):
        raise SpecError("the checkpoint's metadata has no learner_config, so use_layer_norm, leaky_relu_slope "
                        "and the normaliser epsilon are unknown: save it with metadata={'learner_config': "
                        "learner.to_config()}, or pass --spec with model.args", source=src)
    trunk = sorted(int(k.split(".")[1]) for k in module if k.startswith("trunk.") and k.endswith(".weight"))
    first = module["trunk.0.weight"] if trunk else module["heads.weight"]
    args = {"n_features": int(first.shape[1]), "hidden": [int(module[f"trunk.{i}.weight"].shape[0]) for i in trunk],
            "n_heads": int(module["heads.weight"].shape[0]), "normalize": "norm_mean" in module}
    for key, arg, kind in (("use_layer_norm", "use_layer_norm", bool), ("leaky_relu_slope", "leaky_relu_slope", float)):
        if key in config:
            if kind is bool and not isinstance(config[key], bool):
                raise SpecError(f"learner_config.{key} must be true or false", source=src)
            args[arg] = kind(config[key])
    norm = config.get("normalizer")
    if isinstance(norm, dict) and "epsilon" in norm:
        args["norm_eps"] = float(norm["epsilon"])
    return {"model": {"arch": "multihead", "args": args}}


def metadata_names(user, src: str) -> dict:
    """{"feature_names": [...], "head_names": [...]}: the metadata's top-level lists of those names (the
    arguments of alberta-framework's ``relevance_to_dict``), each present only when the metadata has it."""
    out = {}
    for key in ("feature_names", "head_names"):
        names = user.get(key) if isinstance(user, dict) else None
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise CheckpointError(f"metadata.{key} must be a list of strings", source=src)
        out[key] = list(names)
    return out


def missing_config_error(path) -> SpecError:
    try:
        spec_from_config({}, None, str(path))
    except SpecError as e:
        return e
    raise AssertionError  # pragma: no cover


def read_folder(path):
    """The folder as a fadiag RawCheckpoint: content {"model": ..., "learner": ..., "fadiag_spec": ...}
    (torch tensors; the spec only when the metadata carries a learner_config)."""
    import torch

    from . import RawCheckpoint

    from .folders import folder_files

    src = str(path)
    files = folder_files(path, src=src)  # checked before anything in the folder is opened
    tree, user = read_tree(path, files)
    module, extras = to_fadiag_state(tree, src)
    content = {"model": {k: torch.from_numpy(np.array(v)) for k, v in module.items()},
               "learner": {k: torch.from_numpy(np.array(v)) for k, v in extras.items()}}
    config = user.get("learner_config")
    if isinstance(config, dict):
        content["fadiag_spec"] = spec_from_config(module, config, src)
    names = metadata_names(user, src)
    if names:
        content[METADATA_NAMES] = names
    return RawCheckpoint(path=src, format="alberta-orbax", sha256=folder_sha256(path, files), trusted=False,
                         content=content)
