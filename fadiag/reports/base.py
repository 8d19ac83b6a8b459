"""The one report model every family shares (docs/json.md).

A report is a frozen dataclass: an envelope (schema, fadiag_version, flags, checkpoint, data, spec, runtime,
settings) that every family has, plus the family's own payload fields. Its verdict is never stored by hand:
``verdict_of(flags)`` is the one rule, with one word for "nothing flagged" and one prefix for the rest.
``to_dict()`` writes the JSON object in the family's key order; ``from_dict()`` (through the schema registry)
reads a saved one back and validates it, so ``fadiag report``/``fadiag compare`` take only what this fadiag can
read. Thresholds are declared once as ``Threshold`` objects and validated by ``merge_thresholds``.

This module imports neither torch nor numpy: the CLI and the renderers use it at start-up.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping, Sequence

from ..errors import InputError, ThresholdError

#: The verdict words (DESIGN.md, JSON report contract). One for "nothing flagged", one prefix for the rest.
NOTHING_FLAGGED = "trustworthy"
FLAGGED_PREFIX = "needs walk-back: "
#: thresholds crossed outside their calibration (the audit's flags only): not a walk-back (fadiag.calibration)
OUT_OF_CALIBRATION_PREFIX = "out of calibration: "


def clean(v: Any) -> Any:
    """JSON-safe copy: non-finite floats -> None, tuples -> lists, dataclasses -> dicts."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    if isinstance(v, Report):
        return v.to_dict()
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return clean(dataclasses.asdict(v))
    return v


@dataclass(frozen=True)
class Flag:
    """One diagnostic's outcome. flagged: True/False, or None when skipped (see detail)."""

    id: str
    name: str
    flagged: bool | None
    value: float | None
    threshold: float | None
    detail: str = ""
    calibration: Any = None
    """The audit's: where the threshold came from and whether this model is inside it (fadiag.calibration).
    Written only when set (other families' flags have no such key)."""

    def to_dict(self) -> dict:
        d = clean(dataclasses.asdict(self))
        if d.get("calibration") is None:
            d.pop("calibration", None)
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "report") -> "Flag":
        if not (isinstance(d, dict) and isinstance(d.get("id"), str) and d.get("flagged", 0) in (True, False, None)):
            raise InputError("malformed report: 'flags' must be a list of {id, flagged, ...}", source=source)
        cal = d.get("calibration")
        return cls(d["id"], str(d.get("name", d["id"])), d["flagged"], d.get("value"), d.get("threshold"),
                   str(d.get("detail", "")), cal if isinstance(cal, dict) else None)


def out_of_calibration(f: Flag) -> bool:
    """A threshold crossed outside its calibration: shown, not flagged (fadiag.calibration)."""
    c = f.calibration
    return not f.flagged and isinstance(c, dict) and bool(c.get("crossed")) and c.get("inside") is False


def verdict_of(flags: Iterable[Flag]) -> str:
    """The one verdict rule: "trustworthy", or "needs walk-back: " and the flagged names joined by "; ".
    Thresholds crossed outside their calibration are named after "out of calibration: " (alone, or in
    parentheses after the walk-back), never as a walk-back."""
    flags = list(flags)
    names = [f.name for f in flags if f.flagged]
    outside = [f.name for f in flags if out_of_calibration(f)]
    oc = OUT_OF_CALIBRATION_PREFIX + "; ".join(outside)
    if not names:
        return oc if outside else NOTHING_FLAGGED
    return FLAGGED_PREFIX + "; ".join(names) + (f" ({oc})" if outside else "")


# ------------------------------------------------------------------------------------------ reports

#: schema name -> Report subclass (and the older schema names each class still reads).
REGISTRY: dict[str, type] = {}

#: Envelope keys written after the family's own keys when present (added by the CLI layer).
TRAILING = ("runtime", "settings", "settings_config")


@dataclass(frozen=True, kw_only=True)
class Report:
    """The envelope. Subclasses add their payload fields and set SCHEMA and KEYS (the JSON key order)."""

    SCHEMA: ClassVar[str] = ""
    KEYS: ClassVar[tuple] = ()
    #: older schema names this class reads; ``upgrade(d)`` turns such a dict into the current shape.
    READS: ClassVar[tuple] = ()

    flags: tuple = ()
    fadiag_version: str = ""
    checkpoint: Any = None
    data: Any = None
    spec: Any = None
    runtime: Any = None
    settings: Any = None
    settings_config: Any = None
    #: keys a newer fadiag wrote under the same schema number: kept so that a round trip loses nothing.
    extra: Mapping = field(default_factory=dict)

    @property
    def schema(self) -> str:
        return self.SCHEMA

    @property
    def flagged(self) -> bool:
        return any(f.flagged for f in self.flags)

    @property
    def verdict(self) -> str:
        return verdict_of(self.flags)

    def flag(self, fid: str) -> Flag | None:
        return next((f for f in self.flags if f.id == fid), None)

    @property
    def family(self) -> str:
        """"fadiag.credit/2" -> "credit"."""
        return self.SCHEMA.split("/")[0].removeprefix("fadiag.")

    def headline(self) -> list:
        """(label, value) pairs ``fadiag compare`` shows before the flags (a family adds its headline numbers)."""
        return []

    def series(self) -> dict:
        """Per-layer series (JSON key -> list over layers) ``fadiag compare`` shows layer by layer."""
        return {}

    def replace(self, **changes) -> "Report":
        return dataclasses.replace(self, **changes)

    def _value(self, k: str):
        if k == "schema":
            return self.SCHEMA
        if k == "verdict":
            return self.verdict
        if k == "flags":
            return [f.to_dict() for f in self.flags]
        return getattr(self, k)

    def to_dict(self) -> dict:
        d = {k: self._value(k) for k in self.KEYS}
        for k in TRAILING:
            if k not in d and getattr(self, k) is not None:
                d[k] = getattr(self, k)
        d.update(self.extra)
        return clean(d)

    @classmethod
    def upgrade(cls, d: dict) -> dict:
        """Turn a dict of one of READS into the current schema's shape (default: the same keys)."""
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "report") -> "Report":
        if d.get("schema") != cls.SCHEMA:
            try:
                d = cls.upgrade(dict(d))
            except InputError as e:
                raise InputError(str(e), source=source) if e.source is None else e from None
        flags = d.get("flags")
        if not isinstance(flags, list):
            raise InputError("malformed report: 'flags' must be a list of {id, flagged, ...}", source=source)
        if not isinstance(d.get("verdict"), str):
            raise InputError("malformed report: no 'verdict'", source=source)
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in cls.KEYS if k not in d and k in names and _required(cls, k)]
        if missing:
            raise InputError(f"malformed {cls.SCHEMA} report: missing {', '.join(missing)}", source=source)
        kw = {k: v for k, v in d.items() if k in names and k not in ("flags", "extra")}
        extra = {k: v for k, v in d.items() if k not in names and k not in ("schema", "verdict")}
        return cls(flags=tuple(Flag.from_dict(f, source) for f in flags), extra=extra, **kw)


def _required(cls, name: str) -> bool:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def register(cls: type) -> type:
    """Class decorator: make ``cls`` the reader of its SCHEMA (and of each older name in READS)."""
    for name in (cls.SCHEMA, *cls.READS):
        REGISTRY[name] = cls
    return cls


def from_dict(d: Any, source: str = "report") -> Report:
    """Read one saved report (a dict parsed from JSON) through the schema registry; InputError if it is not one."""
    from ..registry import load_reports

    load_reports()
    if not (isinstance(d, dict) and str(d.get("schema", "")).startswith("fadiag.")):
        raise InputError("not a fadiag report (no 'schema' key starting with 'fadiag.')", source=source)
    cls = REGISTRY.get(d["schema"])
    if cls is None:
        raise InputError(f"unknown report schema {d['schema']!r} (this fadiag reads {', '.join(sorted(REGISTRY))})",
                         source=source)
    return cls.from_dict(d, source)


# ------------------------------------------------------------------------------------------ thresholds

@dataclass(frozen=True)
class Threshold:
    """A declared threshold: its default and valid range. ``rule`` is said in the error ("is a cosine ceiling in
    [-1, 1]"); low/high bound it (inclusive), ``positive`` requires > 0."""

    name: str
    default: float
    low: float | None = None
    high: float | None = None
    positive: bool = False
    rule: str = ""
    help: str = ""

    def check(self, v: Any, source: str) -> float:
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise ThresholdError(f"{self.name} must be a number, got {v!r}", source=source) from None
        if isinstance(v, bool) or not math.isfinite(fv):
            raise ThresholdError(f"{self.name} must be a finite number, got {v!r}", source=source)
        if self.positive and fv <= 0:
            raise ThresholdError(f"{self.name} must be positive, got {v!r}", source=source)
        if (self.low is not None and fv < self.low) or (self.high is not None and fv > self.high):
            raise ThresholdError(f"{self.name} {self.rule or f'is in [{self.low}, {self.high}]'}, got {v!r}",
                                 source=source)
        return fv


def merge_thresholds(defs: Sequence[Threshold], *layers: Mapping | None, source: str = "--threshold",
                     kind: str = "threshold") -> dict:
    """Defaults of ``defs``, overridden by each mapping in ``layers`` in turn; every value checked."""
    by_name = {t.name: t for t in defs}
    out = {t.name: t.default for t in defs}
    for layer in layers:
        for k, v in (layer or {}).items():
            if not isinstance(k, str):
                raise ThresholdError(f"{kind} names must be strings, got {k!r}", source=source)
            if k not in by_name:
                near = difflib.get_close_matches(k, list(by_name), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(by_name)})"
                raise ThresholdError(f"unknown {kind} {k!r}{hint}", source=source)
            out[k] = by_name[k].check(v, source)
    return out
