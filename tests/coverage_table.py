"""docs/models.md's coverage table, read back so that tests check it (tests/kernel/test_models_coverage.py for its
rows, tests/kernel/test_hf_zoo.py and tests/kernel/test_models_timm_tv.py for what each model's audit reports)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "models.md"

#: "how its blocks are read" -> what the audit's data.stream must show for it
HOW = {
    "block class": lambda st: "block class from the model" in " ".join(st["notes"]),
    "config.depths": lambda st: "config.depths" in " ".join(st["notes"]),
    "config depth": lambda st: "number config's depth" in " ".join(st["notes"]),
    "shared layer": lambda st: "applied" in st["blocks"],
    "decoder": lambda st: "encoder-decoder" in " ".join(st["notes"]) and ".decoder" in f".{st['blocks']}",
    "timm ViT preset": lambda st: st["source"] == "preset: timm VisionTransformer",
    "torchvision ResNet preset": lambda st: st["source"] == "preset: torchvision ResNet",
    "torchvision ViT preset": lambda st: st["source"] == "preset: torchvision VisionTransformer",
    "residual units": lambda st: st["source"].startswith("preset: residual units of"),
}

_ROW = re.compile(r"^\| (?P<family>[^|]+) \| `(?P<arch>[^`]+)` \| (?P<how>[^|]+) \| (?P<n>\d+) \| "
                  r"`(?P<file>test_\w+\.py)` `(?P<name>\w+)`(?P<slow> \(slow\))? \|$")


def rows() -> dict:
    """test case name -> the row's cells (family, arch, how, n (int), file, slow (bool))."""
    out = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            d = m.groupdict()
            assert d["name"] not in out, f"{d['name']} twice in docs/models.md"
            out[d["name"]] = {**d, "how": d["how"].strip(), "n": int(d["n"]), "slow": bool(d["slow"])}
    return out


def check(name: str, stream: dict) -> None:
    """The audit's data.stream for test case ``name`` is what docs/models.md says."""
    row = rows()[name]
    assert stream["n_blocks"] == row["n"], (name, stream["blocks"], row)
    assert HOW[row["how"]](stream), (name, row["how"], stream)
