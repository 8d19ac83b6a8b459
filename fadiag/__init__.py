"""fadiag: audit trained checkpoints of biologically plausible learners.

Public API (imported lazily, so ``import fadiag`` and ``fadiag --help`` never pull torch):
``load``, ``audit``, ``credit``, ``edges``, ``relevance``, ``edge_evidence``, ``mrr``.
"""

from __future__ import annotations

__version__ = "0.1.0"


def _offline() -> None:
    """Every model library fadiag drives runs offline: set before any of them is imported (fadiag.checkpoint.offline)."""
    from .checkpoint.offline import force_offline

    force_offline()


_offline()

#: module -> the kernel's public names it provides (each imported on first use); every family adds its own
#: (its record's ``api``: fadiag.registry).
_PROVIDERS = {
    "fadiag.subject": ("load", "Subject"),
    "fadiag.errors": ("FadiagError",),
}


def _lazy() -> dict:
    from .registry import api_names

    return {**{name: (mod, name) for mod, names in _PROVIDERS.items() for name in names},
            **{name: (mod, name) for name, mod in api_names().items()}}


_LAZY = _lazy()

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'fadiag' has no attribute {name!r}")
