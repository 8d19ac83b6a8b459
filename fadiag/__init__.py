"""fadiag: audit trained checkpoints of biologically plausible learners.

Public API (imported lazily, so ``import fadiag`` and ``fadiag --help`` never pull torch):
``load``, ``audit``, ``credit``, ``edges``, ``relevance``, ``edge_evidence``, ``mrr``.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load": ("fadiag.subject", "load"),
    "Subject": ("fadiag.subject", "Subject"),
    "audit": ("fadiag.api", "audit"),
    "credit": ("fadiag.credit_api", "credit"),
    "edges": ("fadiag.edges_api", "edges"),
    "relevance": ("fadiag.relevance_api", "relevance"),
    "relevance_report": ("fadiag.diagnostics.relevance", "relevance_report"),
    "LearnerState": ("fadiag.diagnostics.relevance", "LearnerState"),
    "inspect_checkpoint": ("fadiag.inspect", "inspect_checkpoint"),
    "edge_evidence": ("fadiag.diagnostics.edges", "edge_evidence"),
    "mrr": ("fadiag.diagnostics.edges", "mrr"),
    "FadiagError": ("fadiag.errors", "FadiagError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'fadiag' has no attribute {name!r}")
