"""``first_flagged``: per audit flag, the first step where it fires and the layer where it started
(docs/science.md §8). Pure functions of the step records (fadiag.families.trajectory.report.point_from_audit): no
quantity is recomputed, only each record's own numbers compared with the run's thresholds.

The layer where a flag started: of the layers past the flag's per-layer criterion at the first flagged step,
the one that has been past it since the earliest step (ties: the shallowest). Per-layer criteria:

- (a) ratio_to_h0: ‖h_l‖ > ratio · ‖h_0‖ (l ≥ 1); per_block: ‖h_l‖ > ratio · ‖h_{l-1}‖; a null norm or a zero
  denominator counts as past it;
- (b) ‖g_l‖ < g_norm_floor or null;
- (e) ‖h_l‖ or ‖g_l‖ null (non-finite);
- (f) block l (h_l → h_{l+1}) adds at most DEAD_BLOCK_RATIO · ‖h_l‖;
- (c) the stability layer l*; (d) and any other flag: no layer (null).
"""

from __future__ import annotations

import math

#: fadiag.diagnostics.protocol.DEAD_BLOCK_RATIO (kept torch-free here; a test holds the two equal)
DEAD_BLOCK_RATIO = 1e-7


def _bad(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def layers_past(fid: str, p: dict, th: dict) -> list | None:
    """The layers past flag ``fid``'s per-layer criterion in record ``p``; None for a flag without layers."""
    h, g = p.get("residual_norms") or [], p.get("bp_grad_norms") or []
    if fid == "a":
        ratio = th.get("h_norm_explosion_ratio")
        per_block = p.get("growth_mode") == "per_block"
        out = []
        for l in range(1, len(h)):
            ref = h[l - 1] if per_block else h[0]
            if _bad(h[l]) or _bad(ref) or ref == 0 or h[l] > ratio * ref:
                out.append(l)
        return out
    if fid == "b":
        floor = th.get("g_norm_floor")
        return [l for l, v in enumerate(g) if _bad(v) or v < floor]
    if fid == "e":
        return [l for l in range(max(len(h), len(g))) if (l < len(h) and _bad(h[l])) or (l < len(g) and _bad(g[l]))]
    if fid == "f":
        u = p.get("block_update_norms") or []
        return [l for l, v in enumerate(u) if v is not None and l < len(h) and not _bad(v) and not _bad(h[l])
                and (v == 0.0 or v <= DEAD_BLOCK_RATIO * h[l])]
    if fid == "c" and isinstance(p.get("stability_layer"), int):
        return [p["stability_layer"]]
    return None


def news(p: dict, thresholds: dict, since: dict, first: dict) -> list:
    """Take record ``p`` (the next step, in step order): update ``since`` (flag id -> {layer: the step from which
    it has been past the criterion without a break}) and ``first`` (flag id -> its first firing); return
    [{id, name, layer}] for the flags that fire for the first time at ``p``. What fadiag.callbacks keeps between
    audits (a few integers per flag), and what ``first_flagged`` runs over a trajectory."""
    out = []
    for f in p.get("flags") or []:
        fid = f["id"]
        layers = layers_past(fid, p, thresholds)
        prev = since.get(fid, {})
        since[fid] = cur = {l: prev.get(l, p["step"]) for l in layers or []}
        if f.get("flagged") and fid not in first:
            layer = min(cur, key=lambda l: (cur[l], l)) if cur else None
            first[fid] = {"step": p["step"], "layer": layer, "layers": layers, "name": f.get("name"),
                          "value": f.get("value"), "threshold": f.get("threshold"),
                          "checkpoint": (p.get("checkpoint") or {}).get("path")}
            out.append({"id": fid, "name": f.get("name"), "layer": layer})
    return out


def first_flagged(points: list, thresholds: dict) -> dict:
    """flag id -> {step, layer, layers, name, value, threshold, checkpoint} at the first record (in step order)
    where it fires, or None when it never does (ids: every flag any record has, in id order). Sets each record's
    ``first_flagged`` (the flags firing for the first time there), as fadiag.callbacks writes it."""
    since, first = {}, {}
    for p in points:
        p["first_flagged"] = news(p, thresholds, since, first)
    ids = sorted({f["id"] for p in points for f in p.get("flags") or []})
    return {fid: first.get(fid) for fid in ids}
