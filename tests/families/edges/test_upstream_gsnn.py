"""``arch: gsnn-upstream`` and ``fadiag.compat.gsnn`` against slow references of upstream GSNN's math.

The references below are written from upstream's definitions, independently of fadiag's code: a float64
forward from the state dict's own tensors (dense W_in / W_out built entry by entry from the COO indices,
group layer norm and node MLP node by node), upstream's ``_fast_corr`` (ordinal ``argsort().argsort()``
ranks, standardised, ``Ra.T @ Rg / (M - 1)``), scipy's average-rank Spearman, and upstream's MRR as a loop.
The committed fixture (tests/fixtures/gsnn_upstream, written by make_gsnn_upstream.py) keeps this running
without the ``gsnn`` package, which is not on PyPI; the one test that needs it is skipped without it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fadiag.compat.gsnn import FunctionEdgeInferer, mrr, ordinal_edge_evidence
from fadiag.models.gsnn_upstream import UpstreamGSNN

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "gsnn_upstream"
CKPT = FIX / "gsnn_upstream.pt"
sys.path.insert(0, str(FIX.parent))
from make_gsnn_upstream import FUNC_EDGES, graph_args  # noqa: E402

F64 = torch.float64


def _sd():
    return torch.load(CKPT, weights_only=True)


def _data(n=512):
    d = np.load(FIX / "gsnn_upstream_data.npz")
    return torch.from_numpy(d["x"][:n]), torch.from_numpy(d["y"][:n])


def _loaded(sd=None, **kw) -> UpstreamGSNN:
    m = UpstreamGSNN(**kw)
    m.load_state_dict(sd if sd is not None else _sd())
    return m.eval()


# ------------------------------------------------------------------------------------ slow references

def _dense(indices, values, shape):
    W = torch.zeros(shape, dtype=F64)
    for k in range(indices.shape[1]):
        W[int(indices[0, k]), int(indices[1, k])] += float(values[k])
    return W


def ref_forward(sd, x, nonlin=F.elu, norm="layer", norm_first=True, node_mlp=True, point="pre"):
    """Upstream GSNN's forward in float64 from the raw state dict; returns (out, captured per block)."""
    ei, im, om = sd["edge_index"], sd["input_node_mask"], sd["output_node_mask"]
    L = sum(1 for k in sd if k.endswith(".lin_in.indices"))
    ntot, E = im.numel(), ei.shape[1]
    B = x.shape[0]
    xn = torch.zeros(B, ntot, dtype=F64)
    xn[:, im.nonzero(as_tuple=True)[0]] = x.to(F64)
    h = xn[:, ei[0]]
    caps = []
    for l in range(L):
        p = f"ResBlocks.{l}."
        groups = sd[p + "channel_groups"]
        C = groups.numel()
        W_in = _dense(sd[p + "lin_in.indices"], sd[p + "lin_in.values"], (E, C))
        out = h @ W_in + sd[p + "lin_in.bias"].to(F64).view(-1)
        pre = out
        nodes = sorted(set(groups.tolist()))

        def gnorm(t):
            if norm == "none":
                return t
            segs = []
            for n in nodes:
                seg = t[:, groups == n]
                mu = seg.mean(1, keepdim=True).detach()
                sd_ = seg.std(1, unbiased=True, keepdim=True).detach()
                segs.append((seg - mu) / (sd_ + 0.1) * float(sd[p + "norm.gamma"][n]) + float(sd[p + "norm.beta"][n]))
            return torch.cat(segs, 1)

        out = nonlin(gnorm(out)) if norm_first else gnorm(nonlin(out))
        if node_mlp:
            segs = []
            for n in nodes:
                seg = out[:, groups == n]
                z = seg @ sd[p + "mlp.mlp.0.weight"].to(F64).T + sd[p + "mlp.mlp.0.bias"].to(F64)
                z = F.layer_norm(z, z.shape[-1:], sd[p + "mlp.mlp.1.weight"].to(F64), sd[p + "mlp.mlp.1.bias"].to(F64))
                z = nonlin(z) @ sd[p + "mlp.mlp.4.weight"].to(F64).T + sd[p + "mlp.mlp.4.bias"].to(F64)
                segs.append(z)
            out = torch.cat(segs, 1)
        caps.append(pre if point == "pre" else out)
        W_out = _dense(sd[p + "lin_out.indices"], sd[p + "lin_out.values"], (C, E))
        o = out @ W_out + sd[p + "lin_out.bias"].to(F64).view(-1)
        rw = torch.relu(sd[p + "residual_weight"].to(F64)) if p + "residual_weight" in sd else 1.0
        h = o + rw * h
    h = h / math.sqrt(L)
    y = torch.zeros(B, ntot, dtype=F64)
    deg = torch.bincount(ei[1], minlength=ntot).clamp_min(1)
    for e in range(E):
        d = int(ei[1, e])
        if om[d]:
            y[:, d] += h[:, e]
    return (y / deg.to(F64).sqrt())[:, om], caps


def ref_observations(sd, x, y, **kw):
    """Upstream's observations: |.| summed per node; acts of block l with grads of block l+1; float64."""
    out, caps = ref_forward(sd, x.to(F64).requires_grad_(True), **kw)
    loss = F.mse_loss(out, y.to(F64))
    grads = torch.autograd.grad(loss, caps)
    groups = sd["ResBlocks.0.channel_groups"]
    nodes = sorted(set(groups.tolist()))

    def per_node(t):
        return torch.stack([t[:, groups == n].abs().sum(1) for n in nodes], 1).detach()

    A = torch.cat([per_node(c) for c in caps[:-1]])
    G = torch.cat([per_node(g) for g in grads[1:]])
    return A, G


def ref_fast_corr(A, G):
    """Upstream's _fast_corr: a column whose population std is <= 1e-12 BEFORE ranking scores 0 (its row or
    column of W); the others get ordinal ranks (argsort of argsort), standardised, Ra.T @ Rg / (M - 1)."""
    valid_a = A.to(F64).std(0, unbiased=False) > 1e-12
    valid_g = G.to(F64).std(0, unbiased=False) > 1e-12
    Ra = A.argsort(0).argsort(0).to(F64)
    Rg = G.argsort(0).argsort(0).to(F64)
    Ra = (Ra - Ra.mean(0)) / Ra.std(0)
    Rg = (Rg - Rg.mean(0)) / Rg.std(0)
    W = Ra.T @ Rg / (A.shape[0] - 1)
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            if not (valid_a[i] and valid_g[j]):
                W[i, j] = 0.0
    return W


def ref_mrr(S, queries, true_edges) -> float:
    true = set(map(tuple, true_edges))
    rr = []
    for s, d in queries:
        row = [float(v) for v in S[s]]
        cand = [c for c in range(len(row)) if c == d or (s, c) not in true]
        t = row[d]
        greater = sum(1 for c in cand if row[c] > t)
        equal = sum(1 for c in cand if row[c] == t)
        rr.append(1.0 / (greater + 0.5 * (equal + 1)))
    return sum(rr) / len(rr)


# ------------------------------------------------------------------------------------------- layout

def test_spec_build_has_upstream_keys_and_checkpoint_build_matches():
    sd = _sd()
    built = UpstreamGSNN(**graph_args())
    want = built.state_dict()
    assert set(want) == set(sd)
    assert all(tuple(want[k].shape) == tuple(sd[k].shape) for k in sd)
    assert {"edge_index", "input_node_mask", "output_node_mask", "function_edge_mask", "ResBlocks.0.lin_in.values",
            "ResBlocks.3.lin_out.indices", "ResBlocks.0.norm.gamma", "ResBlocks.0.mlp.mlp.0.weight",
            "ResBlocks.2.residual_weight", "ResBlocks.1.channel_groups"} <= set(sd)
    for k in ("edge_index", "ResBlocks.0.lin_in.indices", "ResBlocks.0.lin_out.indices", "ResBlocks.0.channel_groups"):
        assert torch.equal(want[k], sd[k]), k  # the same COO order as the checkpoint's
    built.load_state_dict(sd)
    x, _ = _data(64)
    with torch.no_grad():
        assert torch.equal(built.eval()(x), _loaded()(x))


def test_forward_equals_the_slow_reference():
    sd = _sd()
    x, _ = _data(32)
    m = _loaded()
    ref, _ = ref_forward(sd, x)
    with torch.no_grad():
        got = m(x)
    assert got.shape == (32, 2)
    np.testing.assert_allclose(got.double().numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_known_edges_are_the_function_graph_without_self_loops():
    m = _loaded()
    got = sorted(map(tuple, m.known_edges.T.tolist()))
    assert got == sorted(map(tuple, FUNC_EDGES))
    assert int(m.edge_index.max()) > m.n_nodes  # the homogeneous buffer is not what --penalty uses
    assert m.n_nodes == 8 and m.channel_groups.numel() == 24


# ------------------------------------------------------------------------------------ edge evidence

def test_fit_equals_upstream_fast_corr_on_continuous_data():
    x, y = _data()
    sd = _sd()
    A, G = ref_observations(sd, x, y)
    ref = ref_fast_corr(A, G)
    W = FunctionEdgeInferer(_loaded(), torch.nn.MSELoss(), torch.tensor(FUNC_EDGES).T).fit(x, y)
    assert isinstance(W, np.ndarray) and W.shape == (8, 8)
    # continuous: no ties in the columns that vary; constant-gradient nodes score 0, as upstream
    for col in range(8):
        if G[:, col].std() > 0:
            assert G[:, col].unique().numel() == G.shape[0]
        if A[:, col].std() > 0:
            assert A[:, col].unique().numel() == A.shape[0]
    assert int((ref != 0).sum()) >= 48
    np.testing.assert_allclose(W, ref.numpy(), atol=1e-5)
    # average ties give the same numbers here (no ties)
    Wa = FunctionEdgeInferer(_loaded(), torch.nn.MSELoss()).fit(x, y, ties="average")
    np.testing.assert_allclose(Wa, ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(ordinal_edge_evidence(A, G).numpy(), ref.numpy(), atol=1e-5)


def _tie_model():
    torch.manual_seed(3)
    a = graph_args()
    a.update(channels=1, node_mlp=False, norm="none", nonlin="relu")
    return UpstreamGSNN(**a).eval()


def test_tie_heavy_data_equals_scipy_average_rank_and_ordinal_equals_upstream():
    stats = pytest.importorskip("scipy.stats")
    m = _tie_model()
    x, y = _data()
    sd = m.state_dict()
    A, G = ref_observations(sd, x, y, nonlin=F.relu, norm="none", node_mlp=False, point="post")
    frac_tied = float(np.mean([1 - A[:, i].unique().numel() / A.shape[0] for i in range(8)]))
    assert frac_tied > 0.3  # ReLU zeros: many ties
    W = FunctionEdgeInferer(m, torch.nn.MSELoss(), use_prenorm=False).fit(x, y, ties="average")
    ref = np.zeros((8, 8))
    for i in range(8):
        for j in range(8):
            if A[:, i].std() > 0 and G[:, j].std() > 0:
                ref[i, j] = stats.spearmanr(A[:, i].numpy(), G[:, j].numpy()).correlation
    np.testing.assert_allclose(W, ref, atol=2e-6)
    Wo = FunctionEdgeInferer(m, torch.nn.MSELoss(), use_prenorm=False).fit(x, y)  # upstream's default: ordinal
    np.testing.assert_allclose(Wo, ref_fast_corr(A, G).numpy(), atol=1e-5)
    assert np.abs(Wo - W).max() > 1e-3  # the two tie conventions really differ here


def test_mrr_equals_the_upstream_loop():
    rng = np.random.default_rng(0)
    S = rng.normal(size=(8, 8)).round(1)  # rounding makes ties
    q = [(0, 1), (1, 2), (2, 6), (7, 3), (0, 4)]
    assert mrr(S, torch.tensor(q).T, torch.tensor(FUNC_EDGES).T) == pytest.approx(ref_mrr(S, q, FUNC_EDGES), abs=1e-12)
    assert mrr(S, torch.tensor(q).T, torch.tensor(q).T, query_chunk_size=2) == pytest.approx(ref_mrr(S, q, q), abs=1e-12)


def test_penalty_and_scale_match_their_formulas():
    x, y = _data(256)
    inf = FunctionEdgeInferer(_loaded(), torch.nn.MSELoss(), torch.tensor(FUNC_EDGES).T)
    d = inf.fit_details(x, y)
    W0 = d["W"].double()
    W = inf.fit(x, y, penalty_factor=0.2)
    indeg = np.bincount([e[1] for e in FUNC_EDGES], minlength=8)
    outdeg = np.bincount([e[0] for e in FUNC_EDGES], minlength=8)
    ref = W0.numpy() * (1.2 ** outdeg)[:, None] * (0.8 ** indeg)[None, :]
    np.testing.assert_allclose(W, ref, rtol=1e-5, atol=1e-7)
    Ws = inf.fit(x, y, scale_by_act_mean=True)
    np.testing.assert_allclose(Ws, W0.numpy() * d["acts"].double().mean(0).numpy()[:, None], rtol=1e-5, atol=1e-7)
    a = inf.fit(x, y, estimate=True, estimate_iters=2, estimate_n_samples=128, seed=4)
    b = inf.fit(x, y, estimate=True, estimate_iters=2, estimate_n_samples=128, seed=4)
    assert np.array_equal(a, b) and not np.allclose(a, W0.numpy())


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_edges_on_the_upstream_checkpoint_with_no_code(run_cli, tmp_path):
    code, out, err = run_cli(["edges", CKPT, "-f", "json", "-q", "--matrix", tmp_path / "W.npy"])
    assert code in (0, 1), err
    rep = json.loads(out)
    assert rep["params"]["norm"] == "l1" and rep["params"]["loss"] == "mse" and rep["params"]["agg"] == "sum"
    assert rep["n_nodes"] == 8 and rep["n_blocks"] == 4
    W = np.load(tmp_path / "W.npy")
    x, y = _data()
    Wc = FunctionEdgeInferer(_loaded(), torch.nn.MSELoss()).fit(x, y, ties="average")  # the CLI keeps fadiag's ties
    np.testing.assert_allclose(W, Wc, atol=1e-6)
    assert rep["scoring"]["mrr"] == pytest.approx(mrr(W, torch.tensor(FUNC_EDGES).T, torch.tensor(FUNC_EDGES).T),
                                                  abs=1e-12)
    # --penalty uses the function -> function edges, not the homogeneous buffer
    code, out, err = run_cli(["edges", CKPT, "-f", "json", "-q", "--penalty", "0.05", "--matrix", tmp_path / "P.npy"])
    assert code in (0, 1), err
    P = np.load(tmp_path / "P.npy")
    indeg = np.bincount([e[1] for e in FUNC_EDGES], minlength=8)
    outdeg = np.bincount([e[0] for e in FUNC_EDGES], minlength=8)
    np.testing.assert_allclose(P, W * (1.05 ** outdeg)[:, None] * (0.95 ** indeg)[None, :], rtol=1e-5, atol=1e-7)
    # --known FILE replaces them
    (tmp_path / "k.tsv").write_text("0\t1\n")
    code, out, err = run_cli(["edges", CKPT, "-f", "json", "-q", "--penalty", "0.05", "--known", tmp_path / "k.tsv",
                              "--matrix", tmp_path / "K.npy"])
    assert code in (0, 1), err
    K = np.load(tmp_path / "K.npy")
    f = np.ones((8, 8))
    f[0, :] *= 1.05
    f[:, 1] *= 0.95
    np.testing.assert_allclose(K, W * f, rtol=1e-5, atol=1e-7)
    # --ties ordinal is opt-in and named in the report
    assert rep["params"]["ties"] == "average"
    code, out, err = run_cli(["edges", CKPT, "-f", "json", "-q", "--ties", "ordinal"])
    assert code in (0, 1), err
    assert json.loads(out)["params"]["ties"] == "ordinal"
    code, out, err = run_cli(["edges", CKPT, "-f", "json", "-q", "--ties", "dense"])
    assert code == 2 and "--ties" in err


def test_pruned_checkpoint_loads_with_its_own_shapes(run_cli, tmp_path):
    sd = _sd()
    L = 4
    for lin in ("lin_in", "lin_out"):
        vals = torch.stack([sd[f"ResBlocks.{i}.{lin}.values"] for i in range(L)])
        keep = (vals.abs().max(0).values >= 0.3).nonzero(as_tuple=True)[0]  # upstream's prune(threshold)
        assert 0 < keep.numel() < vals.shape[1]
        for i in range(L):
            sd[f"ResBlocks.{i}.{lin}.values"] = sd[f"ResBlocks.{i}.{lin}.values"][keep].clone()
            sd[f"ResBlocks.{i}.{lin}.indices"] = sd[f"ResBlocks.{i}.{lin}.indices"][:, keep].clone()
    torch.save(sd, tmp_path / "pruned.pt")
    code, out, err = run_cli(["edges", tmp_path / "pruned.pt", "--spec", FIX / "gsnn_upstream.yaml", "-f", "json", "-q"])
    assert code in (0, 1), err
    x, _ = _data(16)
    with torch.no_grad():
        got = _loaded(sd)(x)
    np.testing.assert_allclose(got.double().numpy(), ref_forward(sd, x)[0].numpy(), rtol=1e-5, atol=1e-6)


def test_not_an_upstream_state_dict_is_exit_2(run_cli, tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "x.pt")
    code, out, err = run_cli(["edges", tmp_path / "x.pt", "--spec", FIX / "gsnn_upstream.yaml"])
    assert code == 2 and "gsnn-upstream" in err and "Traceback" not in err


def test_real_upstream_package_if_installed():
    gsnn = pytest.importorskip("gsnn.models.GSNN", reason="upstream gsnn is not on PyPI; install it from source")
    a = graph_args()
    eid = {("input", "to", "function"): torch.tensor(a["edge_index_dict"]["input_to_function"]).T,
           ("function", "to", "function"): torch.tensor(a["edge_index_dict"]["function_to_function"]).T,
           ("function", "to", "output"): torch.tensor(a["edge_index_dict"]["function_to_output"]).T}
    up = gsnn.GSNN(eid, a["node_names_dict"], channels=3, layers=4, node_mlp_hidden=8)
    up.load_state_dict(_sd())
    x, _ = _data(16)
    with torch.no_grad():
        np.testing.assert_allclose(up.eval()(x).numpy(), _loaded()(x).numpy(), rtol=1e-5, atol=1e-6)


def test_an_upstream_module_instance_is_taken_by_its_state_dict():
    """FunctionEdgeInferer(model=<upstream GSNN>): its weights are copied into gsnn-upstream (no gsnn import)."""
    src = _loaded()

    class LooksUpstream(torch.nn.Module):  # upstream's attributes and state-dict keys, not fadiag's
        def __init__(self):
            super().__init__()
            self.ResBlocks = src.ResBlocks
            for k in ("output_node_mask", "input_node_mask", "edge_index", "function_edge_mask",
                      "input_edge_mask", "output_edge_mask"):
                self.register_buffer(k, getattr(src, k).clone())
            self.nonlin, self.norm_first, self.residual, self.dropout = torch.nn.ELU, True, True, 0.0

    x, y = _data(256)
    a = FunctionEdgeInferer(LooksUpstream(), torch.nn.MSELoss()).fit(x, y)
    b = FunctionEdgeInferer(src, torch.nn.MSELoss()).fit(x, y)
    np.testing.assert_array_equal(a, b)
    up = LooksUpstream()
    up.nonlin = torch.nn.Hardtanh
    with pytest.raises(ValueError, match="nonlinearity"):
        FunctionEdgeInferer(up, torch.nn.MSELoss())
    with pytest.raises(ValueError, match="crit"):
        FunctionEdgeInferer(src, torch.nn.L1Loss())


def test_a_whole_saved_model_is_read_under_trust_checkpoint(run_cli, tmp_path):
    """gsnn-lib's scripts save the whole module (torch.save(model)): refused by default, its state dict
    under --trust-checkpoint, with the same W as the state-dict checkpoint."""
    torch.save(_loaded(), tmp_path / "whole.pt")
    spec = FIX / "gsnn_upstream.yaml"
    code, out, err = run_cli(["edges", tmp_path / "whole.pt", "--spec", spec, "-f", "json", "-q"])
    assert code == 2 and "--trust-checkpoint" in err
    code, out, err = run_cli(["edges", tmp_path / "whole.pt", "--spec", spec, "-f", "json", "-q",
                              "--trust-checkpoint", "--matrix", tmp_path / "W1.npy"])
    assert code in (0, 1), err
    assert json.loads(out)["checkpoint"]["trusted"] is True
    code, out, err = run_cli(["edges", CKPT, "-f", "json", "-q", "--matrix", tmp_path / "W0.npy"])
    np.testing.assert_array_equal(np.load(tmp_path / "W1.npy"), np.load(tmp_path / "W0.npy"))


def test_truth_files_may_name_nodes(run_cli, tmp_path):
    import shutil

    import yaml

    for f in ("gsnn_upstream.pt", "gsnn_upstream_data.npz"):
        shutil.copy(FIX / f, tmp_path / f)
    spec = yaml.safe_load((FIX / "gsnn_upstream.yaml").read_text())
    spec["model"]["args"] = {"node_names_dict": {"function": [f"f{i}" for i in range(8)]}}
    (tmp_path / "gsnn_upstream.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "gsnn_upstream_truth.tsv").write_text("source\ttarget\n" + "".join(f"f{s}\tf{d}\n" for s, d in FUNC_EDGES))
    code, out, err = run_cli(["edges", tmp_path / "gsnn_upstream.pt", "-f", "json", "-q"])
    assert code in (0, 1), err
    code0, out0, _ = run_cli(["edges", CKPT, "-f", "json", "-q"])
    assert json.loads(out)["scoring"]["mrr"] == json.loads(out0)["scoring"]["mrr"]
    (tmp_path / "gsnn_upstream_truth.tsv").write_text("f0\tf1\nf0\tnope\n")
    code, out, err = run_cli(["edges", tmp_path / "gsnn_upstream.pt", "-f", "json", "-q"])
    assert code == 2 and "line 2" in err
    spec["model"]["args"] = {"node_names_dict": {"function": ["a", "b"]}}
    (tmp_path / "gsnn_upstream.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = run_cli(["edges", tmp_path / "gsnn_upstream.pt", "-f", "json", "-q"])
    assert code == 2 and "names 2 function nodes" in err
