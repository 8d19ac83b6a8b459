"""Re-measures the sizes in docs/upstream.md's table of intended differences, so they cannot drift.

    python benchmarks/upstream_table.py            # print every measured size
    python benchmarks/upstream_table.py --check    # also check that docs/upstream.md states each one

Each size is measured on inputs committed to the repository: the four shipped example checkpoints
(checkpoints_example/), the upstream-GSNN-layout fixture (tests/fixtures/gsnn_upstream/) rebuilt as a
tie-heavy ReLU model, the alberta-framework folders written by alberta-framework itself with upstream's own
numbers beside them (tests/fixtures/alberta/), and the shipped DFA checkpoint for credit. Sizes are printed
with two significant digits (``2.9e-2``), the form the table uses; tests/docs/test_upstream_table.py runs the
check in the suite.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "upstream.md"
SHIPPED = ["resmlp_bp.pt", "resmlp_dfa.pt", "resmlp_bp_init.pt", "resmlp_dfa_init.pt"]
ALBERTA = ["autostep_ln", "autostep_noln", "idbd", "lms", "hybrid"]
OBS = [0.3, -2.0, 0.05, 1.5, -0.4]


def fmt(v: float) -> str:
    """Two significant digits, the table's form: 0.029 -> '2.9e-2', 0.078 -> '7.8e-2', 12.0 -> '1.2e1'."""
    m, e = f"{float(v):.1e}".split("e")
    return f"{m}e{int(e)}"


def midpoint() -> dict:
    """Largest |lower - midpoint| over the per-layer medians of the shipped examples, relative to the lower
    median (h, g) and to the midpoint (h_mid, g_mid)."""
    import fadiag
    from fadiag.diagnostics.protocol import norms_per_layer
    from fadiag.stream import stream_pass

    out = {"h": 0.0, "g": 0.0, "h_mid": 0.0, "g_mid": 0.0}
    for name in SHIPPED:
        s = fadiag.load(str(ROOT / "checkpoints_example" / name))
        sp = stream_pass(s.model, *s.batches[0])  # the audit's (a) and (b) batch
        for key, xs in (("h", sp.hiddens), ("g", sp.grads)):
            a, b = norms_per_layer(xs, "lower"), norms_per_layer(xs, "midpoint")
            out[key] = max(out[key], max(abs(x - y) / abs(x) for x, y in zip(a, b)))
            out[key + "_mid"] = max(out[key + "_mid"], max(abs(x - y) / abs(y) for x, y in zip(a, b)))
    return out


def _tie_observations():
    """The tie-heavy ReLU model: the upstream-layout fixture graph with one channel per node, no norm, no node
    MLP, ReLU, seed 3, captured at lin_out's input (use_prenorm=False), on the fixture's 512 rows."""
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_gsnn_upstream import OUT, graph_args

    from fadiag.compat.gsnn import FunctionEdgeInferer
    from fadiag.models.gsnn_upstream import UpstreamGSNN

    torch.manual_seed(3)
    a = graph_args()
    a.update(channels=1, node_mlp=False, norm="none", nonlin="relu")
    m = UpstreamGSNN(**a).eval()
    d = np.load(OUT / "gsnn_upstream_data.npz")
    x, y = torch.from_numpy(d["x"][:512]), torch.from_numpy(d["y"][:512])
    return FunctionEdgeInferer(m, torch.nn.MSELoss(), use_prenorm=False).fit_details(x, y)


def ties() -> dict:
    """max |W_ordinal - W_average| on the tie-heavy model, its tied fractions, and how far permuting the
    observation rows moves each W (5 seeded permutations)."""
    from fadiag.compat.gsnn import ordinal_edge_evidence
    from fadiag.diagnostics import edges as E

    d = _tie_observations()
    A, G = d["acts"], d["grads"]
    Wo, Wa = ordinal_edge_evidence(A, G), E.edge_evidence(A, G)

    def tied(X):
        return float(np.mean([1 - X[:, i].unique().numel() / X.shape[0] for i in range(X.shape[1])]))

    up = fa = 0.0
    for seed in range(5):
        p = torch.randperm(A.shape[0], generator=torch.Generator().manual_seed(seed))
        up = max(up, float((ordinal_edge_evidence(A[p], G[p]) - Wo).abs().max()))
        fa = max(fa, float((E.edge_evidence(A[p], G[p]) - Wa).abs().max()))
    return {"dW": float((Wo - Wa).abs().max()), "tied_act": tied(A), "tied_grad": tied(G),
            "perm_upstream": up, "perm_fadiag": fa}


def _pairs(ref: dict, got: dict):
    """(upstream number, fadiag number) for every leaf of upstream's report, found in fadiag's by its path."""
    stack = [(ref, got)]
    while stack:
        r, g = stack.pop()
        for k, v in r.items():
            if isinstance(v, dict):
                stack.append((v, g[k]))
            else:
                yield v, g[k]


def relevance() -> dict:
    """fadiag vs upstream's own numbers on the alberta-framework folders: the largest relative difference
    of the state-only numbers and of the Jacobian at a point (per element), the IDBD trunk step-size activity
    (upstream reports zeros) and the IDBD heads' mean step size (fadiag only)."""
    import fadiag

    fix = ROOT / "tests" / "fixtures" / "alberta"
    refs = json.loads((fix / "upstream_reference.json").read_text())
    out = {"state": 0.0, "jacobian": 0.0}
    for name in ALBERTA:
        rep = fadiag.relevance(fadiag.load(str(fix / name), need_data=False),
                               observation=",".join(map(str, OBS))).to_dict()
        for r, g in _pairs(refs[name]["relevance"], rep):
            if r != 0:
                out["state"] = max(out["state"], abs(g - r) / abs(r))
        J = np.array([[rep["sensitivity"]["observation"]["jacobian"][h][f] for f in rep["feature_names"]]
                      for h in rep["head_names"]])
        Jr = np.array(refs[name]["jacobian"])
        out["jacobian"] = max(out["jacobian"], float(np.max(np.abs(J - Jr)[Jr != 0] / np.abs(Jr[Jr != 0]))))
        out["jacobian_of_max"] = max(out.get("jacobian_of_max", 0.0), float(np.abs(J - Jr).max() / np.abs(Jr).max()))
        if name == "idbd":
            out["idbd_activity"] = float(np.mean(list(rep["trunk"]["step_size_activity"].values())))
            out["idbd_head_step"] = float(np.mean([v["mean_step_size"] for v in rep["per_head"].values()]))
            out["idbd_head_step_upstream"] = any("mean_step_size" in v for v in refs[name]["relevance"]["per_head"].values())
    return out


def credit() -> dict:
    """Γ_l on the shipped DFA checkpoint (DFA signal): fadiag's float64 cosine by hand against the reference's
    float32 ``F.cosine_similarity`` (eps 1e-8 clamps each norm) of the same a_l and g_l: the largest
    |difference| over layers, and the ratio fadiag / reference at the deepest layer once g_L is scaled to a
    median per-sample norm of 1e-10 (pitfall 2 of docs/science.md)."""
    import torch.nn.functional as F

    import fadiag
    from fadiag.families.credit.api import credit_pass
    from fadiag.families.credit.signals import PROVIDERS
    from fadiag.diagnostics import credit as C

    s = fadiag.load(str(ROOT / "checkpoints_example" / "resmlp_dfa.pt"))
    p = credit_pass(s)
    signals, _ = PROVIDERS["dfa"].build(p, 0, None)
    def both(a, g):
        return C.offline_bp_cosine(a, g, floor=0.0)["gamma"], float(F.cosine_similarity(a.float(), g.float(), dim=-1).mean())

    diffs = []
    for l in range(p.n):
        ours, ref = both(signals[l].double(), p.g_sum[l] / p.x.shape[0])
        diffs.append(abs(ours - ref))
    g = p.g_sum[-1] / p.x.shape[0]
    ours, ref = both(signals[-1].double(), g * (1e-10 / float(C.row_norms(g).median())))
    return {"gamma_diff": max(diffs), "tiny_ratio": ours / ref, "g_norm_deep": float(C.row_norms(g).median())}


def expected() -> dict:
    """{first cell of a table row: [what its effect cell must say]}: a string it must contain, or
    ("<=", measured, bound) for sizes at float rounding level (they vary with the machine's kernels), where the
    cell must contain "≤ bound" and the measurement must not exceed the bound."""
    m, t, c = midpoint(), ties(), credit()
    rows = {
        "protocol: midpoint option": [fmt(m["h"]), fmt(m["g"]), fmt(m["h_mid"]), fmt(m["g_mid"])],
        "edges: Spearman ties": [fmt(t["dW"]), f"{round(100 * t['tied_act'])}%", f"{round(100 * t['tied_grad'])}%"],
        "edges: row order": [fmt(t["perm_upstream"]), ("<=", t["perm_fadiag"], "1e-6")],
        "credit: precision": [("<=", c["gamma_diff"], "1e-6"), fmt(c["g_norm_deep"]), fmt(c["tiny_ratio"])],
    }
    try:
        import tensorstore  # noqa: F401
    except ImportError:
        return rows
    r = relevance()
    rows["relevance: IDBD step sizes"] = [fmt(r["idbd_activity"])]
    # fadiag-only: upstream's reference numbers carry no mean_step_size for IDBD heads
    rows["relevance: IDBD heads' `mean_step_size`"] = [fmt(r["idbd_head_step"])] + (
        ["(upstream now reports it)"] if r["idbd_head_step_upstream"] else [])
    rows["relevance: precision"] = [fmt(r["state"])]
    rows["relevance: Jacobian precision"] = [fmt(r["jacobian_of_max"]), fmt(r["jacobian"])]
    return rows


def table_rows(text: str) -> dict:
    """{first cell: effect cell} of the table under '## Differences kept on purpose'."""
    part = text.split("## Differences kept on purpose", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in part.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # "\|" is a literal bar
        if len(cells) >= 4 and not set(cells[0]) <= set("-: "):
            rows[cells[0]] = cells[-1]
    return rows


def check(text: str, want: dict) -> list:
    rows, problems = table_rows(text), []
    for key, strings in want.items():
        if key not in rows:
            problems.append(f"no row {key!r}")
            continue
        for s in strings:
            if isinstance(s, tuple):
                _, got, bound = s
                if f"≤ {bound}" not in rows[key] or not got <= float(bound):
                    problems.append(f"row {key!r}: measured {got:.2g}, the row must say ≤ {bound} and hold")
            elif s not in rows[key]:
                problems.append(f"row {key!r}: measured {s!r} is not in {rows[key]!r}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="check docs/upstream.md against the measurements")
    args = ap.parse_args()
    want = expected()
    for k, v in want.items():
        print(f"{k}: " + ", ".join(x if isinstance(x, str) else f"{x[1]:.2g} (≤ {x[2]})" for x in v))
    if args.check:
        problems = check(DOC.read_text(), want)
        print("\n".join(problems) or "docs/upstream.md agrees")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
