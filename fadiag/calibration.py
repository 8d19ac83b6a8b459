"""What each audit threshold was calibrated on, and whether a model is inside it (docs/science.md §1,
"Calibration").

A calibration is, per flag id, a threshold value with its provenance: the model families, data and batch layout
it was measured on, and the domain it applies to (families, a batch-size range, a minimum number of batches).
The audit attaches to every flag a ``calibration`` object (``judge``) saying where its threshold came from and
whether this model and batch layout are inside that domain. A threshold crossed OUTSIDE the domain is still
computed and shown, but it is not a walk-back: ``flagged`` is false, ``calibration.crossed`` is true and the
verdict says "out of calibration: ..." (``fadiag.reports.base.verdict_of``). A non-finite value (``value``
null) flags wherever it is. ``out_of_calibration: flag`` in a calibration file restores the published rule
(every crossing flags).

Built in: ``PUBLISHED``, the reference protocol's thresholds and what they were calibrated on. ``fadiag
calibrate`` writes a YAML file of the same shape (``dump``); ``load`` reads it back. No torch or numpy here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import InputError

SCHEMA = "fadiag.calibration/1"
#: what an audit does with a threshold crossed outside its calibration's domain
OUT_OF_CALIBRATION = ("note", "flag")
ANY = "*"


@dataclass(frozen=True)
class FlagCalibration:
    """One flag's threshold and what it was calibrated on. ``families``: model families inside (``*``: any);
    ``batch_size``: [low, high] inclusive, or None for any; ``min_batches``: fewest eval batches inside."""

    id: str
    threshold: str | None
    value: float | None
    family: str
    data: str
    layout: str
    families: tuple = (ANY,)
    batch_size: tuple | None = None
    min_batches: int = 1
    healthy: tuple | None = None
    degenerate: tuple | None = None
    margin: str = ""

    def domain(self, model: dict) -> tuple:
        """(inside, why): is this model (``model_context``) inside the domain?"""
        fam = model.get("family")
        if ANY not in self.families and fam not in self.families:
            return False, f"model family {fam!r} is not among the calibrated ({', '.join(self.families)})"
        bs, nb = model.get("batch_size"), model.get("batches")
        if self.batch_size and bs is not None and not self.batch_size[0] <= bs <= self.batch_size[1]:
            lo, hi = self.batch_size
            want = f"{lo}" if lo == hi else f"{lo}-{hi}"
            return False, f"batch size {bs} is outside the calibrated {want}"
        if nb is not None and nb < self.min_batches:
            return False, f"{nb} eval batches, fewer than the calibrated {self.min_batches}"
        return True, "inside"


@dataclass(frozen=True)
class Calibration:
    name: str
    origin: str
    flags: dict = field(default_factory=dict)
    out_of_calibration: str = "note"

    @property
    def thresholds(self) -> dict:
        return {c.threshold: c.value for c in self.flags.values() if c.threshold and c.value is not None}

    def describe(self) -> dict:
        return {"name": self.name, "origin": self.origin, "out_of_calibration": self.out_of_calibration}


_RESMLP = "pre-LN ResMLP (fadiag's resmlp; the reference protocol's)"
_DATA = "CIFAR-10 (4-block d=256, 3 seeds) and MNIST-1D (6-block d=64, checkpoints_example)"
_ANY_DATA = "none: a definition, not a measurement"

#: The reference protocol's thresholds and their calibration (docs/science.md §1).
PUBLISHED = Calibration("published", "built-in", {
    "a": FlagCalibration("a", "h_norm_explosion_ratio", 50.0, _RESMLP, _DATA, "any batch (median over the batch)",
                         families=("resmlp",), healthy=(1.0, 11.0), degenerate=(694.0, math.inf),
                         margin="4.5x above the healthy max, 14x below the degenerate min"),
    "b": FlagCalibration("b", "g_norm_floor", 1e-7, _RESMLP, _DATA, "any batch (median over the batch)",
                         families=("resmlp",), healthy=(1.0e-4, math.inf), degenerate=(0.0, 4.2e-9),
                         margin="1000x below the healthy min, 24x above the degenerate max"),
    "c": FlagCalibration("c", "stability_drift_ceiling", 0.30, _RESMLP, _DATA, "8 batches of 128 samples",
                         families=("resmlp",), batch_size=(128, 128), min_batches=2),
    "d": FlagCalibration("d", "frozen_acc_margin_pp", 2.0, _RESMLP, _DATA,
                         "the headline and baseline on the same eval rows", families=("resmlp",)),
    "e": FlagCalibration("e", None, 0.0, "any", _ANY_DATA, "any"),
    "f": FlagCalibration("f", None, None, "any", "float32's resolution of the stream (1e-7)", "any"),
})


def model_family(arch: str, model: Any = None) -> str:
    """The family a calibration names: a Hugging Face model's ``config.model_type`` (gpt2, olmo2, vit, ...); else
    a built-in arch as is, and ``timm:name`` or ``module:Class`` the part after the colon."""
    from .models import BUILTIN

    mt = getattr(getattr(model, "config", None), "model_type", None)
    if isinstance(mt, str) and mt:
        return mt
    named = {target: name for name, target in BUILTIN.items()}  # "fadiag.models.resmlp:ResMLP" is resmlp
    return named.get(arch) or (arch.rpartition(":")[2] if ":" in arch else arch)


def model_context(family: str, batch_size: int | None, batches: int | None, tokens: int | None) -> dict:
    """What ``FlagCalibration.domain`` reads about the audited model and its eval batches."""
    return {"family": family, "batch_size": batch_size, "batches": batches, "tokens": tokens}


def judge(flag, cal: FlagCalibration | None, model: dict, calibration: Calibration, overridden: str | None):
    """The flag with its ``calibration`` object; a crossing outside the domain is not flagged (module doc)."""
    if cal is None:
        info = {"source": f"{calibration.name}: no entry for ({flag.id})", "inside": False,
                "why": "not calibrated"}
    elif overridden:
        info = {"source": f"given ({overridden}), not a calibration", "inside": True,
                "why": "a threshold the user set applies as given"}
    else:
        inside, why = cal.domain(model)
        info = {"source": f"{calibration.name} ({calibration.origin})", "family": cal.family, "data": cal.data,
                "layout": cal.layout, "inside": inside, "why": why}
    crossed = bool(flag.flagged)
    info["crossed"] = crossed
    flagged = flag.flagged
    if crossed and not info["inside"] and flag.value is not None and calibration.out_of_calibration == "note":
        flagged = False  # computed and shown; the verdict says "out of calibration" (verdict_of)
    return replace(flag, flagged=flagged, calibration=info)


# ------------------------------------------------------------------------------------------ files

def _range(v, where: str):
    if v is None:
        return None
    if not (isinstance(v, list) and len(v) == 2):
        raise InputError(f"{where}: expected [low, high], got {v!r}", source=where)
    return tuple(math.inf if x == "inf" else -math.inf if x == "-inf" else float(x) for x in v)


def load(path: str | Path) -> Calibration:
    """Read a calibration YAML (``fadiag calibrate``'s output); InputError (exit 2) on anything malformed."""
    import yaml

    src = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror or type(e).__name__})", source=src) from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"not a calibration file ({type(e).__name__})", source=src) from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA or not isinstance(raw.get("flags"), dict):
        raise InputError(f"not a calibration file (expected schema: {SCHEMA} and a flags mapping)", source=src)
    mode = raw.get("out_of_calibration", "note")
    if mode not in OUT_OF_CALIBRATION:
        raise InputError(f"out_of_calibration must be one of {', '.join(OUT_OF_CALIBRATION)}, got {mode!r}",
                         source=src)
    flags = dict(PUBLISHED.flags)
    for fid, d in raw["flags"].items():
        flags[str(fid)] = _flag_from(str(fid), d, f"{src}: flags.{fid}")
    return Calibration(str(raw.get("name") or Path(path).stem), src, flags, mode)


def _flag_from(fid: str, d: Any, where: str) -> FlagCalibration:
    if fid not in PUBLISHED.flags or not isinstance(d, dict):
        raise InputError(f"expected a mapping for one of the flags {', '.join(PUBLISHED.flags)}", source=where)
    base = PUBLISHED.flags[fid]
    try:
        value = float(d["value"]) if d.get("value") is not None else base.value
        bs = d.get("batch_size")
        fams = d.get("families", [ANY])
        if not (isinstance(fams, list) and all(isinstance(f, str) for f in fams)):
            raise ValueError("families must be a list of names")
        return FlagCalibration(fid, base.threshold, value, str(d.get("family", ", ".join(fams))),
                               str(d.get("data", "")), str(d.get("layout", "")), tuple(fams),
                               tuple(int(x) for x in bs) if bs else None, int(d.get("min_batches", 1)),
                               _range(d.get("healthy"), where), _range(d.get("degenerate"), where),
                               str(d.get("margin", "")))
    except (TypeError, ValueError, KeyError) as e:
        raise InputError(f"malformed entry ({e})", source=where) from None


def _num(x):
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def dump(cal: Calibration, provenance: dict | None = None) -> str:
    """The calibration as YAML that ``load`` reads (only the flags it calibrated: the rest stay published)."""
    import yaml

    flags = {}
    for fid, c in cal.flags.items():
        d = {"value": c.value, "family": c.family, "data": c.data, "layout": c.layout, "families": list(c.families),
             "min_batches": c.min_batches, "margin": c.margin}
        if c.batch_size:
            d["batch_size"] = list(c.batch_size)
        for k in ("healthy", "degenerate"):
            if getattr(c, k) is not None:
                d[k] = [_num(x) for x in getattr(c, k)]
        flags[fid] = d
    out = {"schema": SCHEMA, "name": cal.name, "out_of_calibration": cal.out_of_calibration, "flags": flags}
    if provenance:
        out["provenance"] = provenance
    return yaml.safe_dump(out, sort_keys=False, width=110)
