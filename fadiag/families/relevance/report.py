"""The relevance family's report, schema "fadiag.relevance/2" (docs/json.md; /1 is read and upgraded)."""

from __future__ import annotations

from dataclasses import dataclass
from ...reports.base import Report, register


@register
@dataclass(frozen=True, kw_only=True)
class RelevanceReport(Report):
    """``fadiag relevance``: per-feature, per-head relevance of a multi-head learner (docs/relevance.md). Its
    verdict words are the /2 change (docs/json.md)."""

    SCHEMA = "fadiag.relevance/2"
    READS = ("fadiag.relevance/1",)
    KEYS = ("schema", "fadiag_version", "method_name", "feature_names", "head_names", "step_size_kind", "trunk",
            "per_head", "sensitivity", "truth_checks", "flags", "verdict", "checkpoint", "data", "spec")

    #: the spec's audit.method_name, else the checkpoint path
    method_name: str
    #: the F input features' names (the spec's, else feature_i)
    feature_names: list
    #: the heads' names (the spec's, else head_i)
    head_names: list
    #: where the step sizes came from (step_sizes, log_step_sizes, adam, step_size, or "a+b"); None if absent
    step_size_kind: str | None = None
    #: {step_size_activity, trace_activity, normalizer_mean, normalizer_std}: {feature: value}, absent inputs absent
    trunk: dict | None = None
    #: {head: {weight_relevance, normalized_weight_relevance, per_raw_unit_relevance, head_reliance,
    #: mean_step_size}} (docs/science.md §4)
    per_head: dict
    #: {over, mean_abs: {head: {feature: v}} | None, observation: {x, jacobian}}; None without --sensitivity
    sensitivity: dict | None = None
    #: per kind, per head: {used_min, unused_max, ratio, ranked_first}; None without relevance.truth
    truth_checks: dict | None = None

    def known_first(self, head: str):
        """Whether the head's known features rank first by every truth check that covers it; None without one."""
        checks = [c[head].get("ranked_first") for c in (self.truth_checks or {}).values()
                  if isinstance(c, dict) and isinstance(c.get(head), dict)]
        return None if not checks else all(checks)
