"""fadiag: audit trained checkpoints of biologically plausible learners.

Public API (imported lazily, so ``import fadiag`` and ``fadiag --help`` never pull torch):
``load``, ``audit``, ``credit``, ``edges``, ``relevance``, ``edge_evidence``, ``mrr``.
"""

from __future__ import annotations

__version__ = "0.1.0"


def _offline() -> None:
    """Every model library fadiag drives runs offline: set before any of them is imported (fadiag.offline)."""
    from .offline import force_offline

    force_offline()


_offline()

#: module -> the public names it provides (each imported on first use).
_PROVIDERS = {
    "fadiag.subject": ("load", "Subject"),
    "fadiag.api": ("audit",),
    "fadiag.credit_api": ("credit",),
    "fadiag.edges_api": ("edges",),
    "fadiag.relevance_api": ("relevance",),
    "fadiag.diagnostics.relevance": ("relevance_report", "LearnerState"),
    "fadiag.inspect": ("inspect_checkpoint",),
    "fadiag.diagnostics.edges": ("edge_evidence", "mrr"),
    "fadiag.errors": ("FadiagError",),
}
_LAZY = {name: (mod, name) for mod, names in _PROVIDERS.items() for name in names}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'fadiag' has no attribute {name!r}")
