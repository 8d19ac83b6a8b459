"""docs/science.md is the project's science reference: every JSON key of every report schema is named in
it, its sections keep the numbers the code cites (§1 audit ... §5 example recipes), and it says near the
top that it replaces the old internal science note (which users never had)."""

from __future__ import annotations

import re

import pytest

from _science import DOC, _named, schema_keys
from _shipped import REPO, shipped_reports

def test_key_walker_skips_data_names():
    rep = {"per_head": {"brute_force": {"weight_relevance": {"noise_a": 1.0}, "head_reliance": {"neuron_0": 1.0}}},
           "layers": [{"nudging": {"0.01": -1.0}, "gamma": 0.1}], "means": {"nudging@0.01": {"all_layers": 1.0}},
           "settings": {"top": "flag"}, "trunk": {"normalizer_std": {"cpu_load": 2.0}}}
    assert schema_keys(rep) == {"per_head", "weight_relevance", "head_reliance", "layers", "nudging", "gamma",
                                "means", "nudging@", "all_layers", "settings", "trunk", "normalizer_std"}


def test_every_json_key_is_named_in_science_doc():
    from fadiag.families.audit.report import AUDIT_KEYS

    text = DOC.read_text(encoding="utf-8")
    reports = shipped_reports()
    keys = {}
    for name, rep in reports.items():
        for k in schema_keys(rep):
            keys.setdefault(k, name)
    for k in AUDIT_KEYS:
        keys.setdefault(k, "fadiag.families.audit.report.AUDIT_KEYS")
    missing = sorted(f"{k} ({where})" for k, where in keys.items() if not _named(k, text))
    assert not missing, f"JSON keys not named in docs/science.md: {missing}"
    assert len(keys) > 150  # the walker really saw every schema


@pytest.mark.parametrize("key", ["residual_norms", "nudging@", "hits@10", "per_raw_unit_relevance"])
def test_named_needs_code_quotes(key):
    assert _named(key, f"see `{key}` here")
    assert not _named(key, f"see {key} here")
    assert not _named("hits@1", "`hits@10`") and not _named("rho", "`rho_deep_floor`")


def test_sections_match_the_citations():
    text = DOC.read_text(encoding="utf-8")
    heads = re.findall(r"^## (\d+)\. (.+)$", text, flags=re.M)
    nums = {int(n): t.lower() for n, t in heads}
    for n, word in ((1, "audit"), (2, "credit"), (3, "edges"), (4, "relevance"), (5, "example")):
        assert word in nums.get(n, ""), (n, nums)
    assert "SCIENCE" + ".md" in text.split("\n## ")[0]  # the rename note, near the top
    # every "§N" cited in the code points at a section that exists
    cited = set()
    for p in list((REPO / "fadiag").rglob("*.py")) + list((REPO / "docs").glob("*.md")) + [REPO / "README.md"]:
        cited |= {int(m) for m in re.findall(r"§\s?(\d+)", p.read_text(encoding="utf-8"))}
    assert cited <= set(nums) | {0}, sorted(cited - set(nums))
