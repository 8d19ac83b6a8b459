"""Evaluation data sources -> disjoint (x, y) batches.

Sources: ``npz`` (arrays x, y; allow_pickle=False; the zip budget), ``pt`` (a dict with tensors x, y, read as
a checkpoint is: pickle scan, zip budget, size limit, weights_only=True; no tensor may describe more than the
limits), ``synthetic`` (Gaussian x, uniform labels, seeded; for smoke tests only). An npz or pt file may also hold ``attention_mask`` (N, T) of 0/1 beside token ids x (N, T): x then carries it
(fadiag.stream.mask.MaskedIds) through batching to the model (docs/models.md, "Attention masks").
Batch i holds rows [i*B, (i+1)*B) of the (optionally seeded-permuted) rows: batches never overlap.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError, InputError


def takes_tokens(model) -> bool:
    """Integer inputs stay integer for models that embed token ids (an nn.Embedding anywhere)."""
    import torch

    return any(isinstance(m, torch.nn.Embedding) for m in model.modules())


def load_arrays(path: str, source: str | None = None, *, integer_labels=True, keep_int: bool = False):
    """Return (x, y) tensors from an npz/pt file, validated: x float finite (integer token ids stay int64 with
    keep_int), y integer labels (1-D; (B, T) token labels with integer_labels="tokens"; finite regression
    targets with integer_labels=False or "regression"). With an ``attention_mask`` in the file, x carries it
    (fadiag.stream.mask) and (B, T) token labels are -100 (ignored) at its pad positions."""
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise DataError("no such data file", source=str(path))
    src = source or ("npz" if p.suffix == ".npz" else "pt")
    try:
        if src == "npz":
            from .checkpoint import check_zip_bomb

            check_zip_bomb(p, DataError)
            with np.load(p, allow_pickle=False) as z:
                missing = [k for k in ("x", "y") if k not in z.files]
                if missing:
                    raise DataError(f"missing array(s) {', '.join(missing)} (found {', '.join(z.files) or 'none'})",
                                    source=str(path))
                x, y = torch.from_numpy(np.array(z["x"])), torch.from_numpy(np.array(z["y"]))
                mask = torch.from_numpy(np.array(z["attention_mask"])) if "attention_mask" in z.files else None
        else:  # read as a checkpoint is: pickle scan, zip budget, size limit, weights_only (docs/safety.md)
            from .checkpoint import read_checkpoint
            from .errors import UnsafeCheckpointError

            try:
                obj = read_checkpoint(p).content
            except UnsafeCheckpointError as e:
                raise DataError(f"refusing to unpickle {', '.join(e.globals[:3]) or 'it'} ({e.reason or 'unsafe'}): a "
                                "data file is read as plain tensors only, never with --trust-checkpoint; re-save it "
                                "as a dict of tensors", source=str(path)) from None
            if not isinstance(obj, dict) or not all(isinstance(obj.get(k), torch.Tensor) for k in ("x", "y")):
                raise DataError("expected a dict with tensors 'x' and 'y'", source=str(path))
            x, y, mask = obj["x"], obj["y"], obj.get("attention_mask")
            if mask is not None and not isinstance(mask, torch.Tensor):
                raise DataError("'attention_mask' must be a tensor", source=str(path))
        for name, t in (("x", x), ("y", y), ("attention_mask", mask)):
            _check_declared(t, name, str(path))
    except InputError:
        raise
    except Exception as e:
        raise DataError(f"cannot read data ({type(e).__name__}: {' '.join(str(e).split())[:120]})",
                        source=str(path)) from None
    x, y = validate_xy(x, y, source=str(path), integer_labels=integer_labels, keep_int=keep_int)
    return (x, y) if mask is None else attach_mask(x, y, mask, source=str(path), tokens=integer_labels == "tokens")


def _check_declared(t, name: str, source: str) -> None:
    """A tensor may not describe more bytes than the checkpoint limit, nor (a view with a zero or overlapping
    stride) far more than its storage holds: refused before anything copies it."""
    import fadiag.checkpoint.limits as _ck

    if t is None or not hasattr(t, "untyped_storage"):
        return
    n = t.numel() * t.element_size()
    stored = t.untyped_storage().nbytes()
    if n > _ck.MAX_CHECKPOINT_BYTES or (n > _ck.MAX_ZIP_EXPANDED and n > _ck.MAX_ZIP_RATIO * max(stored, 1)):
        raise DataError(f"{name} describes {n:,} bytes over a storage of {stored:,} (a view with zero or overlapping "
                        f"strides, or past the {_ck.MAX_CHECKPOINT_BYTES:,}-byte limit): refusing to copy it",
                        source=source)


def attach_mask(x, y, mask, *, source: str, tokens: bool = False):
    """(x carrying the validated attention mask, y): (B, T) token labels (``tokens``) set to -100 at pads."""
    from .stream.mask import check_mask, with_mask

    m = check_mask(mask, x, source=source)
    if tokens and tuple(y.shape) == tuple(m.shape):
        y = y.masked_fill(m == 0, -100)
    return with_mask(x, m), y


def validate_xy(x, y, *, source: str, integer_labels=True, keep_int: bool = False):
    import torch

    from .diagnostics.common import count_nonfinite

    if x.dim() < 2:
        raise DataError(f"x must have a row dimension and features, got shape {tuple(x.shape)}", source=source)
    if x.dtype.is_complex or not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int8, torch.int16,
                                                                        torch.int32, torch.int64)):
        raise DataError(f"x has unsupported dtype {x.dtype}", source=source)
    if keep_int and not x.dtype.is_floating_point:
        x = x.long()  # token ids: an embedding takes integers
    else:
        x = x.float()  # models are loaded in float32; numpy's default float64 would not multiply with them
    if y.shape[0] != x.shape[0]:
        raise DataError(f"x has {x.shape[0]} rows but y has {y.shape[0]}", source=source)
    bad = count_nonfinite(x)
    if bad:
        raise DataError(f"x holds {bad} non-finite value(s)", source=source)
    if y.dtype.is_complex or y.dtype == torch.bool:
        raise DataError(f"y has unsupported dtype {y.dtype}", source=source)
    tokens = integer_labels == "tokens"
    if integer_labels == "regression":
        integer_labels = False
    if integer_labels:
        if y.dtype.is_floating_point:
            if not torch.all(torch.isfinite(y)) or not torch.all(y == y.round()):
                raise DataError("y must hold integer class labels (audit and credit judge classifiers; a regression "
                                "model such as gsnn or multihead is for fadiag edges or fadiag relevance)",
                                source=source)
        if tokens:
            if y.dim() != 2:
                raise DataError(f"loss: lm needs (B, T) token labels, got shape {tuple(y.shape)}", source=source)
            y = y.long()
            if y.numel() and bool(((y < 0) & (y != -100)).any()):
                raise DataError("token labels must be >= 0 (or -100: ignored)", source=source)
            return x, y
        if y.dim() != 1:
            raise DataError(f"y must be 1-D class labels, got shape {tuple(y.shape)}", source=source)
        y = y.long()
        if y.numel() and y.min().item() < 0:
            raise DataError(f"y holds a negative label ({y.min().item()})", source=source)
    else:
        if count_nonfinite(y.float()):
            raise DataError("y holds non-finite values", source=source)
        y = y.float()
    return x, y


def make_batches(x, y, batch_size: int, batches: int, shuffle: bool = False, seed: int = 0, *, source: str = "data"):
    """Split into ``batches`` disjoint batches of ``batch_size`` rows. Errors if there are too few rows."""
    import torch

    need = batch_size * batches
    if x.shape[0] < need:
        raise DataError(
            f"holds {x.shape[0]} rows, fewer than batches x batch_size = {batches} x {batch_size} = {need}; "
            "lower --batches or --batch-size", source=source)
    if shuffle:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(x.shape[0], generator=g)[:need]
    else:
        idx = torch.arange(need)
    return [(x[idx[i * batch_size:(i + 1) * batch_size]], y[idx[i * batch_size:(i + 1) * batch_size]])
            for i in range(batches)]


#: ``data.source: digits`` evaluates on this held-out split (docs/science.md §5): scikit-learn's
#: ``train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)``, 360 of the 1 797 rows. Train on
#: ``digits("train")`` (the other 1 437) and the audit never sees a training row.
DIGITS_SPLIT = {"test_size": 0.2, "random_state": 0, "stratify": True}
DIGITS_SOURCE = "sklearn digits"


def digits(split: str = "test"):
    """scikit-learn's bundled digits (no download): x = pixels / 16 as (N, 64) float32, y = 0..9.

    split "test" (360 rows, what the audit uses), "train" (1 437 rows) or "all" (1 797), see DIGITS_SPLIT."""
    import torch

    if split not in ("test", "train", "all"):
        raise DataError(f"digits split must be test, train or all, got {split!r}", source="data.source")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DataError("data.source digits needs scikit-learn: pip install scikit-learn", source="data.source") from None
    d = load_digits()
    x, y = (d.data / 16.0).astype("float32"), d.target.astype("int64")
    if split != "all":
        parts = train_test_split(x, y, test_size=DIGITS_SPLIT["test_size"], random_state=DIGITS_SPLIT["random_state"],
                                 stratify=y)
        x, y = (parts[1], parts[3]) if split == "test" else (parts[0], parts[2])
    return torch.from_numpy(x), torch.from_numpy(y)


def synthetic(in_shape, n_classes: int, n: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *in_shape), generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return x, y
