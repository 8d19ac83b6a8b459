"""Which checkpoints make a run, and the training step of each (docs/trajectory.md).

A path is a checkpoint file (.pt/.pth/.ckpt/.bin/.safetensors/.npz), a Hugging Face model folder (a Trainer's
``checkpoint-N``) or a run folder holding them. The step of each, first hit wins:

1. a Hugging Face folder's ``trainer_state.json`` (``global_step``), read as JSON;
2. an integer entry of the checkpoint (read safely, weights only) named ``step``, ``global_step``, ``iter_num``
   or ``epoch``, at its top level (Lightning writes ``global_step`` and ``epoch`` there; nanoGPT ``iter_num``) or
   under ``meta``/``metadata``;
3. the name: ``step=N`` / ``step_N`` / ``stepN`` (Lightning's ``epoch=0-step=100.ckpt``), ``checkpoint-N``, else
   the last number in it.

Where the step came from is recorded per step (``step_source``); no step at all is bad input (exit 2).
torch-free at import time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ...errors import InputError

SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".npz")
#: the checkpoint entries that hold a step, in the order they are tried
STEP_KEYS = ("step", "global_step", "iter_num", "epoch")
NESTS = ("meta", "metadata")
#: files of a Trainer/Lightning folder that are never a model checkpoint
NOT_MODELS = ("optimizer", "scheduler", "rng_state", "training_args", "scaler")
_NAMED = re.compile(r"(?:^|[^a-z])step[=_-]?(\d+)", re.I)
_CKPT_N = re.compile(r"^checkpoint-(\d+)$")
_LAST = re.compile(r"(\d+)(?!.*\d)")


def _is_hf(p: Path) -> bool:
    return p.is_dir() and (p / "config.json").is_file()


def _is_model_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in SUFFIXES and not p.stem.lower().startswith(NOT_MODELS)


def expand(paths) -> list:
    """Checkpoint paths: files and model folders as they are; a run folder -> the checkpoints in it (its model
    files and model folders, not looking deeper). A folder with none is bad input."""
    out = []
    for raw in paths:
        p = Path(str(raw))
        if not p.exists():
            raise InputError("no such file or folder", source=str(p))
        if not p.is_dir() or _is_hf(p):
            out.append(str(p))
            continue
        found = sorted(str(c) for c in p.iterdir() if _is_hf(c) or _is_model_file(c))
        if not found:
            raise InputError("a folder with no checkpoints in it (model files, or checkpoint-N model folders)",
                             source=str(p))
        out += found
    return out


def _int(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    item = getattr(v, "item", None)  # a 0-d tensor
    if callable(item) and getattr(v, "numel", lambda: 0)() == 1 and not getattr(v, "is_floating_point", lambda: 1)():
        return int(item())
    return None


def from_content(content) -> tuple:
    """(step, "checkpoint:KEY") from a checkpoint's top-level object, or (None, None)."""
    if not isinstance(content, dict):
        return None, None
    for where in (None, *NESTS):
        d = content if where is None else content.get(where)
        if not isinstance(d, dict):
            continue
        for k in STEP_KEYS:
            v = _int(d.get(k))
            if v is not None and v >= 0:
                return v, f"checkpoint:{k if where is None else where + '.' + k}"
    return None, None


def from_name(path: str) -> tuple:
    """(step, "file name") from a checkpoint's name, or (None, None)."""
    name = Path(path).name
    m = _CKPT_N.match(name)
    stem = Path(path).stem if Path(path).suffix.lower() in SUFFIXES else name
    m = m or _NAMED.search(stem) or _LAST.search(stem)
    return (int(m.group(1)), "file name") if m else (None, None)


def _trainer_state(p: Path):
    f = p / "trainer_state.json"
    if not f.is_file():
        return None, None
    try:
        v = json.loads(f.read_text(encoding="utf-8")).get("global_step")
    except (OSError, ValueError, AttributeError):
        raise InputError("trainer_state.json is not a JSON object", source=str(f)) from None
    return (v, "trainer_state.json:global_step") if isinstance(v, int) and not isinstance(v, bool) else (None, None)


def step_of(path: str, *, trust: bool = False) -> tuple:
    """(step, step_source) of one checkpoint; InputError when neither its content nor its name holds one."""
    p = Path(path)
    step, src = (None, None)
    if _is_hf(p):
        step, src = _trainer_state(p)
    elif p.is_file():
        from ...checkpoint import read_checkpoint

        step, src = from_content(read_checkpoint(str(p), trust=trust).content)
    if step is None:
        step, src = from_name(path)
    if step is None:
        raise InputError(f"cannot tell this checkpoint's training step: no {'/'.join(STEP_KEYS)} entry and no number "
                         "in its name", source=str(path))
    return step, src


def run_steps(paths, *, trust: bool = False) -> list:
    """[(step, step_source, path)] in step order, one checkpoint per step; two with one step is bad input."""
    rows = sorted((*step_of(p, trust=trust), p) for p in expand(paths))
    for (s, _, a), (t, _, b) in zip(rows, rows[1:]):
        if s == t:
            raise InputError(f"two checkpoints at step {s}: {a} and {b}", source="CKPT")
    return rows
