"""Value networks of value-based ("bridge") credit methods (docs/science.md §2, R_l and the ``value`` signal).

``ValueMLP(width, hidden=64, depth=2, n_layers=None)`` computes V(h, t): an MLP on [h, t / n_layers]
(the layer index as a scalar "time" input, scaled to [0, 1]) with GELU activations and a scalar output.
``forward(h, t)`` takes h (B, width) and an int layer index t and returns (B,).

A checkpoint carries the value net's state dict and its EMA target's under the keys named in the spec
(``credit.value``, ``credit.value_target``), with the constructor arguments in ``credit.value_args``.
A user class ("package.module:Class" in ``credit.value_arch``) must have the same ``forward(h, t)``.
"""

from __future__ import annotations

import torch
from torch import nn


class ValueMLP(nn.Module):
    def __init__(self, width: int, hidden: int = 64, depth: int = 2, n_layers: int | None = None):
        super().__init__()
        if width < 1 or hidden < 1 or depth < 1:
            raise ValueError("width, hidden and depth must be positive")
        self.n_layers = n_layers
        dims = [width + 1] + [hidden] * depth
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        layers.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor, t: int) -> torch.Tensor:
        scale = float(self.n_layers) if self.n_layers else 1.0
        tt = torch.full((h.shape[0], 1), t / scale, dtype=h.dtype, device=h.device)
        return self.net(torch.cat([h, tt], dim=1)).squeeze(1)
