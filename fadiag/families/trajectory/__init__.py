"""The trajectory family (docs/trajectory.md): audits across a training run's checkpoints, step by step.

- ``steps``: which checkpoints make a run and the training step of each;
- ``body``: each checkpoint audited through the sweep machinery (fadiag.run.sweep), then one report;
- ``first``: per flag, the first step where it fires and the layer where it started (docs/science.md §8);
- ``report``: the report, schema "fadiag.trajectory/1", and one step's record (what fadiag.callbacks writes);
- ``cli``: ``fadiag trajectory``; ``render``: its table, markdown and plot.

The live counterpart during training is fadiag.callbacks. torch-free at import time.
"""

from __future__ import annotations

from ...registry import Family

FAMILY = Family(
    name="trajectory", order=90, command="fadiag.families.trajectory.cli", report="fadiag.families.trajectory.report",
    forms={"table": "fadiag.families.trajectory.render:trajectory_tables",
           "markdown": "fadiag.families.trajectory.render:trajectory_form",
           "plot": "fadiag.families.trajectory.render:trajectory_figure"})
