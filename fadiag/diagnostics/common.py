"""Constants and small helpers every family shares (docs/science.md): defined once, here."""

from __future__ import annotations

#: (b)'s floor (docs/science.md §1): below it a BP gradient norm is numerical noise. Audit's g_norm_floor
#: threshold and credit's Γ interpretability both default to it.
G_NORM_FLOOR = 1e-7

#: A population standard deviation at or below this is zero: correlations with such a column are 0 (credit's ρ,
#: Pearson) and edge columns are "constant" (docs/science.md §2, §3).
STD_FLOOR = 1e-12


def count_nonfinite(*tensors) -> int:
    """How many NaN/Inf entries the given tensors (or iterables of tensors) hold; non-float tensors count 0."""
    import torch

    n = 0
    for t in tensors:
        if isinstance(t, (list, tuple)):
            n += count_nonfinite(*t)
        elif isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            if t.is_floating_point() and t.numel() and bool(torch.isfinite(t.sum())):
                continue  # a finite sum has no NaN/Inf term (one read-only pass; a sum that overflows is counted)
            n += int((~torch.isfinite(t)).sum())
    return n
