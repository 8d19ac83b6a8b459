"""Edge-list and matrix files of ``fadiag edges``: reading truth/known/held-out edge lists, writing the ranked
edges (``--edges OUT.tsv``) and the evidence matrix (``--matrix OUT.npy``). Atomic writes; bad input is
InputError (exit 2)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ...errors import InputError


def read_edge_list(path: str, n_nodes: int, names=None):
    """Edge list file -> LongTensor (2, E). TSV/CSV with two integer columns (a header line such as
    ``source<TAB>target`` is skipped), or .npy of shape (E, 2) / (2, E) integers (allow_pickle=False).
    With ``names`` (node id -> name, e.g. upstream GSNN's ``node_names_dict['function']``) a row may name
    its two nodes instead."""
    index = {str(v): i for i, v in enumerate(names)} if names else {}
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError("no such edge-list file", source=str(path))
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as e:
            raise InputError(f"cannot read .npy edge list ({type(e).__name__})", source=str(path)) from None
        if arr.ndim != 2 or 2 not in arr.shape or arr.dtype.kind not in "iu":
            raise InputError(f"expected an integer array (E, 2) or (2, E), got {arr.shape} {arr.dtype}",
                             source=str(path))
        t = torch.from_numpy(arr.astype(np.int64))
        t = t if t.shape[0] == 2 and t.shape[1] != 2 else t.T
    else:
        text = p.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        dialect = "excel-tab" if lines and "\t" in lines[0] else "excel"
        pairs = []
        seen_data = False
        for i, row in enumerate(csv.reader(lines, dialect=dialect), start=1):
            row = [c.strip() for c in row if c.strip() != ""]
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise InputError(f"line {i}: expected two columns (source, target)", source=str(path))
            try:
                pairs.append((int(row[0]), int(row[1])))
                seen_data = True
            except ValueError:
                if row[0] in index and row[1] in index:
                    pairs.append((index[row[0]], index[row[1]]))
                    seen_data = True
                    continue
                if not seen_data:
                    seen_data = True  # the first non-comment line may be a header
                    continue
                raise InputError(f"line {i}: node ids must be integers, got {row[:2]}", source=str(path)) from None
        if not pairs:
            raise InputError("edge list is empty", source=str(path))
        t = torch.tensor(pairs, dtype=torch.long).T
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_nodes):
        raise InputError(f"node ids must be in 0..{n_nodes - 1}, found {int(t.min())}..{int(t.max())}",
                         source=str(path))
    return t


def write_edges_tsv(W, path: str) -> None:
    """All off-diagonal pairs ranked by score: source, target, score, rank (1 = strongest). Atomic."""
    import torch

    from ...run.atomic import atomic_path

    n = W.shape[0]
    S = torch.nan_to_num(W.double().clone(), nan=-math.inf)
    S.fill_diagonal_(-math.inf)
    order = torch.argsort(S.flatten(), descending=True, stable=True)[: n * (n - 1)]
    vals = W.flatten()[order].tolist()
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("source\ttarget\tscore\trank\n")
        for rank, (i, v) in enumerate(zip(order.tolist(), vals), start=1):
            s, d = divmod(i, n)
            f.write(f"{s}\t{d}\t{v!r}\t{rank}\n")


def write_matrix(W, path: str) -> None:
    import numpy as np

    from ...run.atomic import atomic_path

    if not str(path).endswith(".npy"):
        raise InputError("matrix file must end in .npy", source=str(path))
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, W.detach().cpu().numpy(), allow_pickle=False)
