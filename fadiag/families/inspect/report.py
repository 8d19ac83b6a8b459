"""The inspect family's report, schema "fadiag.inspect/2" (docs/json.md; /1 is read and upgraded).

/2 changed the verdict words only ("ok" / "needs attention: ..." became the one rule's "trustworthy" /
"needs walk-back: ..."); the keys are /1's, each always present (null where the file was refused), with
``refusal`` written only when the file was refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...reports.base import Report, register


@register
@dataclass(frozen=True, kw_only=True)
class InspectReport(Report):
    SCHEMA = "fadiag.inspect/2"
    READS = ("fadiag.inspect/1",)
    KEYS = ("schema", "fadiag_version", "checkpoint", "needs_unsafe_unpickling", "unsafe_globals", "globals",
            "refusal", "tensors", "other_entries", "n_tensors", "n_elements", "tensors_not_listed",
            "entries_not_listed", "visits", "state_dict_key", "embedded_spec", "archive_anomalies", "flags", "verdict")

    needs_unsafe_unpickling: bool
    unsafe_globals: list | None = None
    """The globals a refused file would import (empty when the file was read)."""
    globals: list | None = None
    refusal: str | None = None
    """The refusal message when the file needs arbitrary unpickling and was not trusted; None otherwise."""
    tensors: list | None = None
    """``{key, shape, dtype, numel, nonfinite}`` per listed tensor (and ``note`` when there is one)."""
    other_entries: list | None = None
    n_tensors: int | None = None
    """Tensors counted, listed or not (at most MAX_LISTED are listed)."""
    n_elements: int | None = None
    tensors_not_listed: int | None = None
    entries_not_listed: int | None = None
    visits: int | None = None
    """Container elements the walk visited (it stops at fadiag.families.inspect.api.MAX_VISITS)."""
    state_dict_key: str | None = None
    """Where the state dict sits: "" at the top level, None when none was found."""
    embedded_spec: bool | None = None
    archive_anomalies: list | None = None

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.refusal is None:
            del d["refusal"]
        return d
