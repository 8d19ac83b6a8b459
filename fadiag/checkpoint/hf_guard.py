"""The checks a Hugging Face model folder passes before anything in it is loaded (docs/safety.md, "Folders").

:func:`check_hf_folder` is called first by the folder loader (fadiag.checkpoint.hf), whatever reads the
weights afterwards:

- the folder is listed by fadiag.checkpoint.folders.folder_files: no file is read through a symlink that
  leads out of the folder (a Hugging Face cache snapshot's links into its own ``blobs/`` excepted), only
  regular files, and the declared sizes of the files it may read (``*.safetensors``, ``*.bin``, ``*.json``)
  together within the checkpoint limit (8 GiB) before anything is hashed or allocated;
- ``config.json`` is at most 1 MiB, nested at most 64 levels, a JSON object;
- it names no weights or backbone to download (fadiag.checkpoint.offline.check_offline_args: ``use_pretrained_backbone``,
  a ``backbone`` naming a Hub model, ...): exit 2 naming the field; fadiag never touches the network.
"""

from __future__ import annotations

from pathlib import Path

from .offline import check_offline_args
from .folders import folder_files, load_json

MAX_CONFIG_BYTES = 1024 * 1024
#: the files of a model folder that may be read (weights, configs, indexes): their sizes count toward the limit
#: (a Trainer checkpoint's optimizer.pt beside the weights does not)
READ_SUFFIXES = (".safetensors", ".bin", ".json")


def check_hf_folder(folder) -> None:
    """Raise CheckpointError (exit 2, one line) unless ``folder`` passes the checks in the module docstring."""
    from ..errors import CheckpointError

    files = folder_files(folder, counted=lambda rel: rel.endswith(READ_SUFFIXES))
    cfg_path = Path(folder) / "config.json"
    src = str(cfg_path)
    sizes = {rel: size for rel, _, size in files}
    if "config.json" not in sizes:
        raise CheckpointError("config.json is not a regular file inside the folder", source=src)
    if sizes["config.json"] > MAX_CONFIG_BYTES:
        raise CheckpointError(f"over the {MAX_CONFIG_BYTES:,}-byte limit for a config", source=src)
    cfg = load_json(cfg_path, src, name="config.json", want=dict)
    check_offline_args(cfg, origin=src, where="")
