"""Upstream GSNN's edge-inference API (``gsnn.optim.FunctionEdgeInferer``, ``mrr``), computed by fadiag.

    from fadiag.compat.gsnn import FunctionEdgeInferer, mrr       # instead of upstream's imports

    W = FunctionEdgeInferer(model, crit, edge_index, use_prenorm=True, device="cpu", norm="l1",
                            agg="sum").fit(x, y, method="spearman", penalty_factor=0.0)   # ndarray (N, N)
    score = mrr(W, edge_index, all_true_edges)                                            # float

``model`` is a fadiag ``gsnn-upstream`` model, fadiag's own ``gsnn``, or an upstream
``gsnn.models.GSNN.GSNN`` instance (its state dict is loaded into ``gsnn-upstream``; the ``gsnn`` package is
never imported here). ``crit`` is a mean-reduced ``torch.nn.MSELoss`` or ``CrossEntropyLoss``.
``edge_index`` holds the known function -> function edges (2, E) used by ``penalty_factor``.

Defaults are upstream's: Spearman ties take the ordinal rank of a sort (``ties="ordinal"``, as upstream's
``argsort``; ``ties="average"`` gives the textbook average ranks that ``fadiag edges`` uses by default), a
column that is constant before ranking scores 0 (upstream's rule: population std <= 1e-12), and the
``estimate`` bootstrap draws ``estimate_n_samples=2500`` input rows per resample. Kept different on purpose
(docs/upstream.md): the bootstrap is seeded (``seed``); NaN scores rank last in ``mrr``. fadiag's extras
(``ties``, ``seed``) are keyword-only. The richer result (W with the observation matrices and constant-column
counts) is :meth:`FunctionEdgeInferer.fit_details`.
"""

from __future__ import annotations

import numpy as np
import torch

from ..diagnostics import edges as E
from ..diagnostics.common import STD_FLOOR

__all__ = ["FunctionEdgeInferer", "mrr", "ordinal_ranks", "ordinal_edge_evidence", "constant_columns", "as_fadiag_model"]


def ordinal_ranks(x: torch.Tensor) -> torch.Tensor:
    """Column-wise ordinal ranks 0..M-1 as upstream computes them, ``x.argsort(0).argsort(0)``: tied values
    get distinct ranks in the order torch's (unstable) sort leaves them, so the result depends on the row
    order and on the sort implementation (docs/upstream.md)."""
    x = torch.as_tensor(x)
    return x.argsort(dim=0).argsort(dim=0).to(torch.float64)


def constant_columns(x) -> torch.Tensor:
    """(N,) bool: the columns of x (M, N) whose population std is <= 1e-12, measured on the values before any
    ranking (upstream's rule; ranking a constant column would give it ranks 0..M-1 and |W| up to 1)."""
    return torch.as_tensor(x).double().std(dim=0, unbiased=False) <= STD_FLOOR


def ordinal_edge_evidence(acts, grads, method: str = "spearman", row_chunk: int | None = None) -> torch.Tensor:
    """W with upstream's ordinal-tie Spearman (Pearson of ordinal ranks); pearson is unchanged. As upstream,
    the row of a constant activation column and the column of a constant gradient column are 0."""
    A = torch.as_tensor(acts)
    G = torch.as_tensor(grads)
    if method != "spearman":
        return E.edge_evidence(A, G, method=method, row_chunk=row_chunk)
    W = E.edge_evidence(ordinal_ranks(A), ordinal_ranks(G), method="pearson", row_chunk=row_chunk)
    keep = ~constant_columns(A)[:, None] & ~constant_columns(G)[None, :]
    return torch.where(keep.to(W.device), W, torch.zeros((), dtype=W.dtype, device=W.device))


def as_fadiag_model(model):
    """fadiag's models as they are; an upstream ``gsnn`` GSNN instance -> ``gsnn-upstream`` with its weights."""
    if hasattr(model, "blocks") and hasattr(model, "channel_groups"):
        return model
    if hasattr(model, "ResBlocks") and hasattr(model, "edge_index"):
        from ..models.gsnn_upstream import NONLINS, UpstreamGSNN

        nl = getattr(model, "nonlin", torch.nn.ELU)
        name = next((k for k, v in NONLINS.items() if v is nl), None)
        if name is None:
            raise ValueError(f"unsupported nonlinearity {nl!r} (supported: {', '.join(NONLINS)})")
        m = UpstreamGSNN(nonlin=name, norm_first=bool(getattr(model, "norm_first", True)),
                         residual=bool(getattr(model, "residual", True)),
                         dropout=float(getattr(model, "dropout", 0.0) or 0.0))
        m.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return m.to(next(model.parameters()).device)
    raise ValueError("model is neither a fadiag graph-structured model nor an upstream GSNN")


def _loss_name(crit) -> str:
    if isinstance(crit, str) and crit in ("mse", "ce"):
        return crit
    red = getattr(crit, "reduction", None)
    if isinstance(crit, torch.nn.MSELoss) and red == "mean":
        return "mse"
    if isinstance(crit, torch.nn.CrossEntropyLoss) and red == "mean":
        return "ce"
    raise ValueError("crit must be torch.nn.MSELoss() or torch.nn.CrossEntropyLoss() with reduction='mean'")


class FunctionEdgeInferer:
    """Upstream's constructor signature; ``fit`` returns W as a numpy array (N, N), W[i, j] = evidence i -> j."""

    def __init__(self, model, crit, edge_index=None, use_prenorm: bool = True, device="cpu", norm: str = "l1",
                 agg: str = "sum"):
        self.model = as_fadiag_model(model)
        self.loss = _loss_name(crit)
        self.edge_index = None if edge_index is None else torch.as_tensor(edge_index).to(torch.long)
        self.use_prenorm = bool(use_prenorm)
        self.device = str(device)
        self.norm, self.agg = norm, agg

    def _observations(self, x, y):
        m = self.model
        where = "pre" if self.use_prenorm else "post"
        old = getattr(m, "where", None)
        if old is not None:
            m.where = where  # gsnn-upstream: lin_in's output (pre) or lin_out's input (post)
        try:
            acts, grads, _ = E.capture_block_signals(m.to(self.device), x.to(self.device), y.to(self.device),
                                                     where=where, loss=self.loss)
        finally:
            if old is not None:
                m.where = old
        n = int(m.n_nodes)
        return E.pair_observations(E.reduce_channels(acts, m.channel_groups, n, self.norm, self.agg),
                                   E.reduce_channels(grads, m.channel_groups, n, self.norm, self.agg))

    def fit_details(self, x, y, method: str = "spearman", penalty_factor: float = 0.0,
                    scale_by_act_mean: bool = False, estimate: bool = False, estimate_iters: int = 10,
                    estimate_n_samples: int = 2500, row_chunk: int | None = None, verbose: bool = False, *,
                    ties: str = "ordinal", seed: int = 0) -> dict:
        """fit's W (a torch tensor) with the observation matrices ``acts``/``grads`` and ``constant_columns``
        ({n_constant_act, n_constant_grad}; None after ``estimate``). With ``estimate``, as upstream, each
        resample's W is scaled by that resample's mean activity (``scale_by_act_mean``) before averaging."""
        if ties not in ("average", "ordinal"):
            raise ValueError(f"ties must be average or ordinal, got {ties!r}")
        x = torch.as_tensor(x)
        y = torch.as_tensor(y)

        def one(xs, ys):
            A, G = self._observations(xs, ys)
            if ties == "ordinal":
                info = {"n_constant_act": int(constant_columns(A).sum()),
                        "n_constant_grad": int(constant_columns(G).sum())}
                return ordinal_edge_evidence(A, G, method, row_chunk), A, G, info
            W, info = E.edge_evidence(A, G, method=method, row_chunk=row_chunk, return_info=True)
            return W, A, G, info

        if estimate:
            # Upstream's bootstrap: resample input rows, rerun forward + backward (seeded here).
            gen = torch.Generator().manual_seed(int(seed))
            ns = int(estimate_n_samples)
            total = None
            for t in range(int(estimate_iters)):
                rows = torch.randint(x.shape[0], (ns,), generator=gen)
                W, A, G, info = one(x[rows], y[rows])
                if scale_by_act_mean:  # upstream scales each resample's W by that resample's activity
                    W = E.scale_by_act_mean(W, A)
                total = W.double() if total is None else total + W.double()
                if verbose:
                    print(f"estimate {t + 1}/{estimate_iters}")
            W = (total / int(estimate_iters)).to(torch.float32)
            A, G = self._observations(x, y)
            info = None
        else:
            W, A, G, info = one(x, y)
            if scale_by_act_mean:
                W = E.scale_by_act_mean(W, A)
        if penalty_factor:
            known = self.edge_index if self.edge_index is not None else getattr(self.model, "known_edges", None)
            if known is None:
                raise ValueError("penalty_factor needs edge_index (the known function -> function edges)")
            W = E.apply_known_edge_penalty(W, known, penalty_factor)
        return {"W": W, "acts": A, "grads": G, "constant_columns": info}

    def fit(self, x, y, method: str = "spearman", penalty_factor: float = 0.0, scale_by_act_mean: bool = False,
            estimate: bool = False, estimate_iters: int = 10, estimate_n_samples: int = 2500,
            row_chunk: int | None = None, verbose: bool = False, **kw) -> np.ndarray:
        """Upstream's ``fit``: W (N, N) as a numpy array. ``**kw``: fadiag's keyword-only extras of
        :meth:`fit_details` (``ties``, ``seed``)."""
        d = self.fit_details(x, y, method=method, penalty_factor=penalty_factor, scale_by_act_mean=scale_by_act_mean,
                             estimate=estimate, estimate_iters=estimate_iters, estimate_n_samples=estimate_n_samples,
                             row_chunk=row_chunk, verbose=verbose, **kw)
        return d["W"].detach().cpu().numpy()


def mrr(A, edge_index, all_true_edges=None, query_chunk_size: int = 2048) -> float:
    """Upstream's signature: MRR of the query edges ``edge_index`` in their source's row of ``A``, other true
    edges masked (fadiag.diagnostics.edges.mrr; NaN scores rank last). ``query_chunk_size`` is accepted
    for compatibility (fadiag sizes its own blocks)."""
    S = torch.as_tensor(np.asarray(A) if not isinstance(A, torch.Tensor) else A)
    return float(E.mrr(S, edge_index, all_true_edges)["mrr"])
