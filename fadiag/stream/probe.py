"""``stream.readout: probe``: a model without a head (``BertModel``, a sentence-transformers folder, a feature
extractor) is audited as model + a linear probe (docs/science.md §1, "Headless models: the probe").

The probe is multinomial logistic regression on the pooled h_L of ``data.train_path`` (the stream's pool,
attention mask respected): W (C, d), b (C) minimise

    mean_i CE(W p_i + b, y_i) + (PROBE_L2 / 2) ||W||_F^2        (b not penalised)

in float64, full batch, from W = 0, b = 0 by L-BFGS (strong Wolfe line search, at most PROBE_ITERS
iterations). The objective is strictly convex in W, so the fit is deterministic and equals scikit-learn's
``LogisticRegression(C=1 / (n * PROBE_L2))`` on the same features (tests/kernel/test_readings.py). The audit then
reads logits = probe(pool(h_L)): every h_l and g_l is the model's, the loss gradient flows through the probe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DataError, InputError

PROBE_L2 = 1e-3
PROBE_ITERS = 500
PROBE_NAME = "multinomial logistic regression on pooled h_L (L2 1e-3, float64 L-BFGS from zero)"


def fit_logreg(p: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = PROBE_L2, iters: int = PROBE_ITERS):
    """(W (C, d), b (C), final objective) of the penalised multinomial logistic regression, float64."""
    p = p.double()
    W = torch.zeros(n_classes, p.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=iters, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def objective():
        return F.cross_entropy(p @ W.T + b, y) + 0.5 * l2 * (W * W).sum()

    def closure():
        opt.zero_grad()
        f = objective()
        f.backward()
        return f

    with torch.enable_grad():
        opt.step(closure)
        f = float(objective().detach())
    return W.detach(), b.detach(), f


def pooled_final_states(view, x, batch: int = 64) -> torch.Tensor:
    """pool(h_L) of every row of x (float64), in chunks, without gradients."""
    from .mask import mask_of, model_inputs
    from .readings import final_state
    from .spec import pool_state

    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch]
            args, kw = model_inputs(view.model, xb)
            h = final_state(view, args, kw)
            out.append(pool_state(h, view.stream.pool, view.stream.prefix_tokens, mask_of(xb)).double())
    return torch.cat(out)


def fit_probe(view, subject):
    """The view with its probe fitted on data.train_path (see the module docstring); ``stream.probe`` says what."""
    from dataclasses import replace

    from ..data import load_arrays
    from ..data import takes_tokens
    from .passes import _Modes, first_batch_view

    sp = subject.spec
    if not sp.data.train_path:
        raise InputError("stream.readout: probe fits a linear probe on data.train_path: set it in the spec (rows "
                         "x, y with class labels, attention_mask for padded token ids)", source=sp.origin)
    path = sp.resolve(sp.data.train_path)
    x, y = load_arrays(path, integer_labels=True, keep_int=takes_tokens(subject.model))
    n_classes = int(y.max()) + 1 if y.numel() else 0
    if n_classes < 2 or x.shape[0] < 2:
        raise DataError("stream.readout: probe needs at least 2 rows and 2 classes in data.train_path", source=path)
    dev = subject.device
    view = first_batch_view(view, x[:min(64, x.shape[0])], dev)  # residual inside/outside, causal, pooling
    with _Modes(view.model):
        feats = pooled_final_states(view, x.to(dev)).cpu()
    W, b, f = fit_logreg(feats, y, n_classes)
    lin = torch.nn.Linear(W.shape[1], n_classes).to(dev)
    with torch.no_grad():
        lin.weight.copy_(W.float())
        lin.bias.copy_(b.float())
    train_acc = float(((feats @ W.T + b).argmax(1) == y).double().mean())
    desc = {"name": PROBE_NAME, "fit_on": str(sp.data.train_path), "rows": int(x.shape[0]), "classes": n_classes,
            "features": int(W.shape[1]), "pool": view.stream.pool, "l2": PROBE_L2, "max_iter": PROBE_ITERS,
            "objective": f, "train_acc": train_acc}
    st = replace(view.stream, probe=desc, why=tuple(p for p in view.stream.why if p[0] != "logits")
                 + (("logits", f"from a probe: {PROBE_NAME}, fitted on {sp.data.train_path}"),))
    out = view._like(view.model, st, True)  # settled on the first training rows
    out.probe = lin
    return out
