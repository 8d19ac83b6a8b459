"""Drop-in replacements for the upstream libraries fadiag reimplements, under their own names.

- ``fadiag.compat.protocol``: the reference four-diagnostic protocol (``residual_norms``, ``bp_grad_norms``,
  ``cross_batch_direction_stability``, ``diagnose``, ``DiagnosticThresholds``, ``DiagnosticReport``), with the
  reference's parameter names and positions; fadiag's extras are keyword-only.
- ``fadiag.compat.gsnn``: upstream GSNN's ``FunctionEdgeInferer`` and ``mrr``, with upstream's defaults
  (ordinal ties, ``estimate_n_samples=2500``).

A script written against the upstream code changes only its import. The differences fadiag keeps on
purpose are listed in docs/upstream.md with the size of each effect.
"""
