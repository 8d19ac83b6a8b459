"""The Python API of DESIGN.md: every name in fadiag.__all__ resolves, lazily (no torch on import), and the
family functions run on the shipped examples."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import EXAMPLES

import fadiag


@pytest.mark.parametrize("name", [n for n in fadiag.__all__ if n != "__version__"])
def test_every_public_name_resolves(name):
    assert getattr(fadiag, name) is not None


def test_import_fadiag_does_not_import_torch():
    code = "import sys, fadiag; assert 'torch' not in sys.modules; fadiag.__version__"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_family_functions_on_the_examples():
    s = fadiag.load(str(EXAMPLES / "resmlp_bp.pt"), batches=2)
    assert s.model.training is False and len(s.batches) == 2
    assert fadiag.audit(s).verdict == "trustworthy"
    assert fadiag.credit(s, signal="bp").schema == "fadiag.credit/2"
    g = fadiag.load(str(EXAMPLES / "gsnn" / "gsnn.pt"), labels="regression")
    rep, W = fadiag.edges(g)
    assert W.shape == (24, 24) and rep.scoring["mrr"] > rep.scoring["random_mrr"] and rep.verdict == "trustworthy"
    m = fadiag.load(str(EXAMPLES / "multihead" / "multihead.pt"), need_data=False)
    assert set(fadiag.relevance(m).per_head) == set(m.spec.relevance.head_names)
    assert fadiag.inspect_checkpoint(str(EXAMPLES / "resmlp_bp.pt")).state_dict_key == "model"


def test_duck_typed_contract_of_builtin_models():
    """Existing protocol scripts run unchanged: embed/blocks/out_ln/out_head and return_hidden."""
    s = fadiag.load(str(EXAMPLES / "resmlp_dfa.pt"), batches=2)
    m = s.model
    assert all(hasattr(m, a) for a in ("embed", "blocks", "out_ln", "out_head"))
    logits, hs = m(s.batches[0][0], return_hidden=True)
    assert len(hs) == len(m.blocks) + 1 and logits.shape == (128, 10)
