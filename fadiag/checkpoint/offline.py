"""fadiag never touches the network (docs/safety.md, "No network").

:func:`force_offline` puts every model library fadiag drives into offline mode: it sets the environment
variables they read at import time (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``, ...) and, should one of them
already be imported, their module-level switches too. ``import fadiag`` calls it, so it runs before any model
library is imported. It also quiets transformers' own log lines (its warnings would come before fadiag's one
error line on stderr).

:func:`check_offline_args` refuses, before anything is built, model arguments that name weights or a backbone
to fetch: a Hugging Face config with ``use_pretrained_backbone: true`` or a ``backbone`` naming a Hub model
(DETR, Mask2Former, ...), torchvision's ``weights=`` / ``weights_backbone=``, a truthy ``pretrained``. Each is
exit 2 naming the field.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..errors import InputError

#: environment variables that switch the Hugging Face libraries to offline mode (read at their import)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
#: keys whose truthy value asks a model constructor to download weights
PRETRAINED_KEYS = ("use_pretrained_backbone", "pretrained", "pretrained_model_name_or_path", "pretrained_backbone")
#: keys whose string value names weights to download (torchvision's ``weights="DEFAULT"``)
WEIGHTS_KEYS = ("weights", "weights_backbone")
#: keys whose value may name a Hub repository of kernels (``kernels-community/flash-attn2``): code from the network
KERNEL_KEYS = ("attn_implementation", "_attn_implementation", "experts_implementation")
#: loggers of the model libraries: only their errors are shown (their warnings would come before fadiag's line)
LIBRARY_LOGGERS = ("transformers", "huggingface_hub", "kernels", "timm", "accelerate")
MAX_DEPTH = 32


def force_offline() -> None:
    """Offline mode for every model library fadiag drives, before (or, if too late, after) its import."""
    import logging
    import warnings

    os.environ.update(OFFLINE_ENV)
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(transformers|huggingface_hub|kernels|timm)(\.|$)")
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
        if hasattr(hub, "HF_HUB_DISABLE_TELEMETRY"):
            hub.HF_HUB_DISABLE_TELEMETRY = True
    tf_log = sys.modules.get("transformers.utils.logging")
    if tf_log is not None:
        try:
            tf_log.set_verbosity_error()
        except Exception:  # pragma: no cover - an odd transformers version: its lines only go to stderr
            pass


def check_offline_args(args: Any, *, origin: str, where: str = "model.args") -> None:
    """Refuse arguments that would make a model constructor download something (see the module docstring)."""
    _walk(args, origin, where, 0)


def _walk(node: Any, origin: str, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InputError(f"{where}: nested deeper than {MAX_DEPTH} levels", source=origin)
    if isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _walk(v, origin, f"{where}[{i}]", depth + 1)
        return
    if not isinstance(node, dict):
        return
    for key in PRETRAINED_KEYS + WEIGHTS_KEYS:
        v = node.get(key)
        if (isinstance(v, str) and v) or (key in PRETRAINED_KEYS and v is True):
            raise InputError(f"{_at(where, key)} = {_show(v)} asks for weights from the network; fadiag never downloads "
                             f"anything: set {key} to {'false' if isinstance(v, bool) else 'null'} (the checkpoint "
                             "holds the weights)", source=origin)
    for key in KERNEL_KEYS:
        v = node.get(key)
        if isinstance(v, str) and "/" in v:
            raise InputError(f"{_at(where, key)} = {_show(v)} names kernels on the Hugging Face Hub (code from the "
                             "network); fadiag never downloads anything: use eager or sdpa", source=origin)
    backbone = node.get("backbone")
    if isinstance(backbone, str) and backbone and not node.get("use_timm_backbone") \
            and not isinstance(node.get("backbone_config"), dict):
        raise InputError(f"{_at(where, 'backbone')} = {_show(backbone)} names a model on the Hugging Face Hub, which fadiag "
                         "would have to download; give its backbone_config in the config instead", source=origin)
    for k, v in node.items():
        if isinstance(v, (dict, list, tuple)):
            _walk(v, origin, _at(where, k), depth + 1)


def _at(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."
