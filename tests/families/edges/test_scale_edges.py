"""Out-of-core edge evidence (fadiag.diagnostics.edges.ObservationSpool) and thread choice, against the
in-memory path and slow float64 references (scipy.stats.spearmanr, numpy corrcoef)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from fadiag.diagnostics import edges as E
from fadiag.diagnostics.edges import ranks
from fadiag.run.spool import cleanup_spools, make_spool_dir

from conftest import EXAMPLES

REPO = Path(__file__).resolve().parents[3]
GSNN = EXAMPLES / "gsnn" / "gsnn.pt"
TRUTH = EXAMPLES / "gsnn" / "gsnn_truth.tsv"
TINY = 1 << 20  # 1 MiB: forces dozens of column blocks and GEMM chunks at M = 3000, N = 200


def _data(m=3000, n=200, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, n))
    g = 0.5 * a[:, ::-1] + rng.standard_normal((m, n))
    if ties:
        a = np.round(a * 2) / 2          # ~15 levels
        g = np.maximum(g, 0.0)           # ReLU zeros: half of each column tied
        a[:, 3] = 1.5                    # a constant column
        g[:, 7] = np.arange(m) % 3       # three levels
    return a.astype(np.float32), g.astype(np.float32)


def _spooled(a, g, method="spearman", max_memory=TINY, batch=128, folder=None):
    with E.ObservationSpool(a.shape[1], folder=folder, max_memory=max_memory) as sp:
        for i in range(0, a.shape[0], batch):
            sp.append(a[i:i + batch], torch.from_numpy(g[i:i + batch]))
        plan = sp.plan()
        W, info = sp.evidence(method)
    return W, info, plan


def _scipy_W(a, g):
    n = a.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = scipy.stats.spearmanr(a.astype(np.float64), g.astype(np.float64)).statistic
    return np.nan_to_num(rho[:n, n:], nan=0.0)


@pytest.mark.parametrize("ties", [False, True])
def test_out_of_core_equals_in_memory_and_scipy(ties):
    a, g = _data(ties=ties)
    W, info, plan = _spooled(a, g)
    assert plan["col_block"] * 10 < a.shape[1] and plan["gemm_rows"] * 5 < a.shape[0]  # many blocks
    W0, info0 = E.edge_evidence(a, g, return_info=True)
    assert W.dtype == torch.float32 and W.shape == (200, 200)
    assert float((W - W0).abs().max()) <= 1e-5
    assert np.abs(W.double().numpy() - _scipy_W(a, g)).max() <= 2e-5
    assert info["n_constant_act"] == info0["n_constant_act"] == (1 if ties else 0)
    assert info["n_constant_grad"] == info0["n_constant_grad"] == 0
    assert info["spool_bytes"] == 2 * 3000 * 200 * 4


def test_out_of_core_pearson_matches_corrcoef():
    a, g = _data(m=1000, n=50, seed=3)
    W, _, _ = _spooled(a, g, method="pearson", max_memory=1 << 19)
    ref = np.corrcoef(a.astype(np.float64).T, g.astype(np.float64).T)[:50, 50:]
    assert np.abs(W.double().numpy() - ref).max() <= 1e-5


def test_uneven_batches_and_one_row_batches():
    a, g = _data(m=257, n=13, seed=5, ties=True)
    W1, _, plan = _spooled(a, g, batch=1, max_memory=150_000)
    assert plan["col_block"] < 13
    W2, _, _ = _spooled(a, g, batch=100)
    W0 = E.edge_evidence(a, g)
    assert float((W1 - W0).abs().max()) <= 1e-5 and float((W2 - W0).abs().max()) <= 1e-5


def test_spool_errors_and_act_mean():
    a, g = _data(m=50, n=4)
    with pytest.raises(ValueError, match="memory size"):
        E.parse_memory("lots")
    with pytest.raises(ValueError, match="unit"):
        E.parse_memory("4 parsecs")
    assert E.parse_memory("4GiB") == 4 << 30 and E.parse_memory("1.5k") == 1536 and E.parse_memory(10**6) == 10**6
    with E.ObservationSpool(4, max_memory=1000) as sp:
        sp.append(a, g)
        np.testing.assert_allclose(sp.act_mean().numpy(), a.astype(np.float64).mean(0), rtol=1e-12)
        with pytest.raises(ValueError, match="too small"):
            sp.evidence()
    with E.ObservationSpool(4) as sp:
        with pytest.raises(ValueError, match="rows, 4"):
            sp.append(a[:, :3], g[:, :3])
        with pytest.raises(ValueError, match="no observations"):
            sp.evidence()
    bad = a.copy()
    bad[3, 1] = np.nan
    with E.ObservationSpool(4) as sp:
        sp.append(bad, g)
        with pytest.raises(ValueError, match="NaN"):
            sp.evidence()
    with E.ObservationSpool(4) as sp:
        sp.append(a, g)
        sp.evidence()
        with pytest.raises(ValueError, match="already"):
            sp.evidence()
        with pytest.raises(ValueError, match="finalised"):
            sp.append(a, g)


def test_spool_folder_removed_and_files_unlinked(tmp_path):
    a, g = _data(m=100, n=5)
    with E.ObservationSpool(5, folder=str(tmp_path)) as sp:
        sp.append(a, g)
        assert [p.name for p in tmp_path.iterdir()] == [Path(sp.folder).name]
        if os.name == "posix":
            assert list(Path(sp.folder).iterdir()) == []  # unlinked at once: nothing survives a kill
    assert list(tmp_path.iterdir()) == []
    d = make_spool_dir(str(tmp_path))
    cleanup_spools()
    assert not os.path.exists(d)
    with pytest.raises(ValueError, match="does not exist"):
        E.ObservationSpool(5, folder=str(tmp_path / "missing"))


_CHILD = textwrap.dedent("""
    import sys, time, numpy as np
    {setup}
    from fadiag.diagnostics.edges import ObservationSpool
    sp = ObservationSpool(8, folder=sys.argv[1])
    sp.append(np.ones((64, 8), np.float32), np.ones((64, 8), np.float32))
    print(sp.folder, flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("setup", ["", "import signal; from fadiag import cli; signal.signal(signal.SIGTERM, cli._on_signal)"],
                         ids=["library", "cli-handler"])
def test_spool_removed_after_sigterm(tmp_path, setup):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(setup=setup), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        folder = proc.stdout.readline().strip()
        assert folder and os.path.isdir(folder), proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert rc in (-signal.SIGTERM, 128 + signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ CLI


def _edges_cli(run_cli, *extra):
    code, out, errtext = run_cli(["edges", GSNN, "--truth", TRUTH, "-f", "json", "-q", *extra])
    return code, (json.loads(out) if out.strip() else None), errtext


def test_cli_edges_out_of_core_matches_in_memory(run_cli, tmp_path):
    code0, rep0, _ = _edges_cli(run_cli)
    code1, rep1, _ = _edges_cli(run_cli, "--spool", tmp_path, "--max-memory", "1MiB")
    assert code0 == code1
    assert rep0["runtime"]["observations"] == "in-memory"
    rt = rep1["runtime"]
    assert rt["observations"] == "out-of-core"
    assert rt["spool_bytes"] == 2 * rep1["n_observations"] * rep1["n_nodes"] * 4
    assert rt["max_memory_bytes"] == 1 << 20 and rt["peak_rss_bytes"] > 0 and rt["col_block"] < rep1["n_nodes"]
    assert rep1["scoring"]["mrr"] == pytest.approx(rep0["scoring"]["mrr"], abs=1e-6)
    for e0, e1 in zip(rep0["top_edges"], rep1["top_edges"]):
        assert e1["score"] == pytest.approx(e0["score"], abs=1e-5)
    assert rep1["constant_columns"] == rep0["constant_columns"]
    assert list(tmp_path.iterdir()) == []
    # scale_by_act_mean uses the spool's running column means
    _, r0, _ = _edges_cli(run_cli, "--scale-by-act-mean")
    _, r1, _ = _edges_cli(run_cli, "--scale-by-act-mean", "--spool", tmp_path)
    assert [e["score"] for e in r1["top_edges"]] == pytest.approx([e["score"] for e in r0["top_edges"]], abs=1e-5)


@pytest.mark.parametrize("extra, msg", [
    (["--max-memory", "many"], "--max-memory"),
    (["--max-memory", "4KiB"], "too small"),
    (["--spool", "/nonexistent/folder"], "spool folder does not exist"),
    (["--spool", ".", "--bootstrap", "2"], "--bootstrap"),
])
def test_cli_edges_out_of_core_bad_input(run_cli, extra, msg):
    code, _, errtext = _edges_cli(run_cli, *extra)
    assert code == 2 and msg in errtext and len(errtext.strip().splitlines()) == 1, errtext


# -------------------------------------------------------------------------------------- threads


def test_choose_threads(monkeypatch):
    from fadiag.run import sweep

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(sweep, "cpu_count", lambda: 7)
    assert sweep.choose_threads() == 1
    assert sweep.choose_threads(entries=sweep.LARGE_EDGE_ENTRIES - 1) == 1
    assert sweep.choose_threads(entries=sweep.LARGE_EDGE_ENTRIES) == 7
    assert sweep.choose_threads(3, entries=10**12) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert sweep.choose_threads() == 2 and sweep.choose_threads(entries=10**12) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert sweep.choose_threads() == 1
    with pytest.raises(Exception, match="--threads"):
        sweep.choose_threads(0)


@pytest.mark.parametrize("cmd", [["relevance", EXAMPLES / "multihead" / "multihead.pt"], ["credit", "--toy-lq"],
                                 ["edges", GSNN]])
def test_cli_records_threads(run_cli, monkeypatch, cmd):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        code, out, errtext = run_cli([*cmd, "-f", "json", "-q", "--exit-zero"])
        assert code == 0, errtext
        assert json.loads(out)["runtime"]["threads"] == 1
        code, out, _ = run_cli([*cmd, "-f", "json", "-q", "--exit-zero", "--threads", "2"])
        assert json.loads(out)["runtime"]["threads"] == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("ties", [False, True])
def test_torch_sort_fallback_equals_numpy_sort(monkeypatch, ties):
    """numpy < 2 (and non-CPU devices) rank with torch.sort: the same W as the numpy argsort path."""
    a, g = _data(m=2000, n=40, seed=9, ties=ties)
    W_np = E.edge_evidence(a, g)
    monkeypatch.setattr(ranks, "_NUMPY_2", False)
    W_t = E.edge_evidence(a, g)
    assert float((W_np - W_t).abs().max()) <= 1e-6
    assert np.abs(W_t.double().numpy() - _scipy_W(a, g)).max() <= 2e-5


def test_threaded_numpy_argsort_rows():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((37, 5000)).astype(np.float32)
    a[5] = 0.0
    out = np.empty(a.shape, dtype=np.int64)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ranks._argsort_rows(a, out)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(np.take_along_axis(a, out, 1), np.sort(a, axis=1))
