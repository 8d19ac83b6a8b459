"""Feature drift M_l (docs/science.md §2): how far a checkpoint's weights moved from their initialisation.

Pure tensor math in float64: per tensor ‖W_final − W_init‖_F / ‖W_init‖_F, and per layer the same ratio of
the layer's parameters taken as one vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

F64 = torch.float64
#: Feature drift is skipped (None) when ‖W_init‖_F is at or below this (docs/science.md §2, M_l).
INIT_NORM_FLOOR = 1e-8



@dataclass(frozen=True)
class FeatureDrift:
    """Result of :func:`feature_drift` (docs/science.md §2, M_l).

    drift: {name: ‖W_final − W_init‖_F / ‖W_init‖_F, or None when ‖W_init‖_F <= 1e-8}.
    delta_norm / init_norm: {name: ‖W_final − W_init‖_F} / {name: ‖W_init‖_F} (float64), for every
      tensor in both dicts, kept so that per-layer aggregates can be formed.
    only_in_final / only_in_init: names present on one side only (sorted); they get no drift.
    """

    drift: dict[str, float | None]
    delta_norm: dict[str, float] = field(default_factory=dict)
    init_norm: dict[str, float] = field(default_factory=dict)
    only_in_final: tuple[str, ...] = ()
    only_in_init: tuple[str, ...] = ()


def feature_drift(final: Mapping[str, torch.Tensor], init: Mapping[str, torch.Tensor]) -> FeatureDrift:
    """Per-tensor feature drift M = ‖W_final − W_init‖_F / ‖W_init‖_F, in float64 (docs/science.md §2).

    final, init: {name: tensor} (state dicts). Tensors of any shape (a 0-d tensor's norm is |w|).
    None when ‖W_init‖_F <= 1e-8 (e.g. zero-initialised biases): the ratio is undefined.
    Raises ValueError when a name's shapes differ. Names on one side only are listed separately in
    the result, never silently dropped. Non-finite weights give NaN.
    """
    drift: dict[str, float | None] = {}
    delta_norm: dict[str, float] = {}
    init_norm: dict[str, float] = {}
    for name in final:
        if name not in init:
            continue
        wf, wi = final[name], init[name]
        if tuple(wf.shape) != tuple(wi.shape):
            raise ValueError(f"feature_drift: '{name}' has shape {tuple(wf.shape)} in final but "
                             f"{tuple(wi.shape)} in init")
        wf64 = wf.detach().to(F64).reshape(-1)
        wi64 = wi.detach().to(F64).reshape(-1).to(wf64.device)
        dn = float(torch.linalg.vector_norm(wf64 - wi64))
        inn = float(torch.linalg.vector_norm(wi64))
        delta_norm[name], init_norm[name] = dn, inn
        drift[name] = dn / inn if inn > INIT_NORM_FLOOR else None
    return FeatureDrift(
        drift=drift,
        delta_norm=delta_norm,
        init_norm=init_norm,
        only_in_final=tuple(sorted(set(final) - set(init))),
        only_in_init=tuple(sorted(set(init) - set(final))),
    )


def drift_per_layer(
    drift: FeatureDrift, layer_of: Callable[[str], int | None]
) -> dict[int, float | None]:
    """Per-layer drift: the drift of a layer's parameters taken as one concatenated vector.

        M_layer = sqrt(Σ_t ‖ΔW_t‖_F²) / sqrt(Σ_t ‖W_init,t‖_F²)   over tensors t with layer_of(t) = layer

    (an RMS-style combination: large tensors weigh by their size, zero-initialised tensors such as
    LayerNorm biases still contribute their movement). ``layer_of(name)`` gives the layer index, or
    None for tensors outside every layer (embedding, head...), which are left out. None when the
    layer's combined init norm is <= 1e-8. Keys in ascending order.
    """
    sq_delta: dict[int, float] = {}
    sq_init: dict[int, float] = {}
    for name, dn in drift.delta_norm.items():
        layer = layer_of(name)
        if layer is None:
            continue
        sq_delta[layer] = sq_delta.get(layer, 0.0) + dn * dn
        sq_init[layer] = sq_init.get(layer, 0.0) + drift.init_norm[name] ** 2
    out: dict[int, float | None] = {}
    for layer in sorted(sq_delta):
        denom = math.sqrt(sq_init[layer])
        out[layer] = math.sqrt(sq_delta[layer]) / denom if denom > INIT_NORM_FLOOR else None
    return out
