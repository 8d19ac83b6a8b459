"""``arch: gsnn-upstream``: upstream GSNN's layout (``gsnn.models.GSNN.GSNN``), rebuilt without the ``gsnn`` package.

A state dict saved by upstream (``torch.save(model.state_dict())``) loads into this module with the same
keys, shapes and forward numbers; ``fadiag edges`` then runs on it with a spec and no user code.

The structure comes either from the spec, with upstream's constructor arguments in YAML form::

    model:
      arch: gsnn-upstream
      args:
        edge_index_dict:                    # upstream keys ('input','to','function') written as strings
          input_to_function: [[0, 0], [1, 2]]        # [src, dst] pairs (or a 2 x E list)
          function_to_function: [[0, 1], [1, 2]]
          function_to_output: [[2, 0]]
        node_names_dict: {input: [a, b], function: [f0, f1, f2], output: [y]}   # or n_input/n_function/n_output
        channels: 5
        layers: 8

or, with no graph arguments, from the checkpoint's own buffers (``edge_index``, the node masks and every
``ResBlocks.i.lin_in/lin_out.indices``), so pruned checkpoints load with their own shapes. What the buffers
cannot say is an argument with upstream's default: ``nonlin`` (elu), ``norm_first`` (true), ``residual``
(true); ``norm`` (layer | batch | none), ``node_mlp``, ``learn_residual``, ``bias``, ``affine`` and
``share_layers`` are read from the keys when not given.

Edge inference reads, per block, the point upstream's ``FunctionEdgeInferer`` reads: with ``where: pre``
(upstream ``use_prenorm=True``) the output of ``lin_in``, before the norm and the nonlinearity whatever
``norm_first`` is; with ``where: post`` (``use_prenorm=False``) what upstream's ``_store_activations``
records, the input of ``lin_out``. Both are (B, C) here (upstream's norm sees (B, C, 1)).
``node_names_dict['function']`` (optional, also without the graph) lets truth and known-edge files name
nodes instead of numbering them. ``known_edges`` are the function -> function edges of ``edge_index`` without the self-loops that
``add_function_self_edges`` adds (what ``--penalty`` needs; ``edge_index`` is the homogeneous graph).

Supported: norm layer (GroupLayerNorm, detached group mean/std, eps 0.1), batch (BatchNorm1d, eps 1e-3),
none; node_mlp; shared or unshared layers; dropout (inactive in eval). Not supported (refused): node
attention, edge-channel norms (batch++, edgebatch, channelema), softmax/rms/ema norms, node masks.
Differences from upstream are listed in docs/upstream.md.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UpstreamGSNN", "hetero_to_homo", "conv_indices"]

NONLINS = {"elu": nn.ELU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU,
           "sigmoid": nn.Sigmoid, "leakyrelu": nn.LeakyReLU, "mish": nn.Mish, "softplus": nn.Softplus}
NORMS = ("layer", "batch", "none")
_KINDS = {"input": ("input", "to", "function"), "function": ("function", "to", "function"),
          "output": ("function", "to", "output")}


def _edge_key(k) -> tuple:
    """('input','to','function') | "input_to_function" | "input,to,function" | "input-to-function" -> tuple."""
    if isinstance(k, tuple):
        return tuple(str(p) for p in k)
    s = str(k).replace(",", " ").replace("-", " ").replace("_", " ").split()
    if len(s) == 2:  # "input function"
        s = [s[0], "to", s[1]]
    return tuple(s)


def _as_edges(v, name: str) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.long) if not isinstance(v, torch.Tensor) else v.to(torch.long)
    if t.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.long)
    if t.dim() != 2 or 2 not in t.shape:
        raise ValueError(f"gsnn-upstream: {name} must be [src, dst] pairs or a 2 x E list, got shape {tuple(t.shape)}")
    return (t if t.shape[0] == 2 and t.shape[1] != 2 else t.T).contiguous()


def hetero_to_homo(edge_index_dict: dict, n_input: int, n_function: int, n_output: int):
    """Upstream's hetero2homo: node ids function 0..F-1, input F..F+I-1, output F+I..; edges in the order
    function->function, input->function, function->output. Returns (edge_index, input_mask, output_mask)."""
    d = {_edge_key(k): _as_edges(v, str(k)) for k, v in edge_index_dict.items()}
    for kind, key in _KINDS.items():
        if key not in d:
            raise ValueError(f"gsnn-upstream: edge_index_dict needs {key} (e.g. {kind if kind != 'input' else 'input'}"
                             f"_to_{key[2]})")
    fe, ie, oe = d[_KINDS["function"]].clone(), d[_KINDS["input"]].clone(), d[_KINDS["output"]].clone()
    for name, e, hi in (("function->function", fe, (n_function, n_function)), ("input->function", ie, (n_input, n_function)),
                        ("function->output", oe, (n_function, n_output))):
        if e.numel() and (int(e.min()) < 0 or int(e[0].max()) >= hi[0] or int(e[1].max()) >= hi[1]):
            raise ValueError(f"gsnn-upstream: {name} edges have node ids outside their node lists")
    ie[0] += n_function
    oe[1] += n_function + n_input
    edge_index = torch.cat((fe, ie, oe), dim=1)
    total = n_input + n_function + n_output
    in_mask = torch.zeros(total, dtype=torch.bool)
    in_mask[n_function:n_function + n_input] = True
    out_mask = torch.zeros(total, dtype=torch.bool)
    out_mask[n_function + n_input:] = True
    return edge_index, in_mask, out_mask


def conv_indices(edge_index: torch.Tensor, channels: int, function_nodes: torch.Tensor):
    """Upstream's get_conv_indices (same COO order): (w_in (2, nnz) [edge, channel], w_out (2, nnz)
    [channel, edge], C, channel_groups (C,))."""
    fn = function_nodes.tolist()
    first = {n: i * channels for i, n in enumerate(fn)}
    src, dst = edge_index.tolist()
    rows, cols = [], []
    for e, d in enumerate(dst):
        if d in first:
            for k in range(channels):
                rows.append(e)
                cols.append(first[d] + k)
    w_in = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
    rows, cols = [], []
    for n in fn:
        out_edges = [e for e, s in enumerate(src) if s == n]
        for k in range(channels):
            for e in out_edges:
                rows.append(first[n] + k)
                cols.append(e)
    w_out = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
    groups = torch.tensor([n for n in fn for _ in range(channels)], dtype=torch.long)
    return w_in, w_out, len(fn) * channels, groups


class SparseLinear(nn.Module):
    """y[b, m] = sum_k values[k] x[b, indices[0, k]] (over k with indices[1, k] = m) + bias[m]. Keys as upstream."""

    def __init__(self, indices: torch.Tensor, size: tuple, bias: bool = True):
        super().__init__()
        self.N, self.M = int(size[0]), int(size[1])
        src, dst = indices
        fan_in = torch.bincount(dst, minlength=self.M).clamp_min(1)[dst].float()
        fan_out = torch.bincount(src, minlength=self.N).clamp_min(1)[src].float()
        self.values = nn.Parameter(torch.randn(indices.shape[1]) * (2.0 / (fan_in + fan_out)).sqrt())
        self.register_buffer("indices", indices.to(torch.long).clone())
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.M, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        src, dst = self.indices
        out = x.new_zeros(x.shape[0], self.M).index_add_(1, dst, x[:, src] * self.values)
        if hasattr(self, "bias"):
            out = out + self.bias.view(1, -1)
        return out


class GroupLayerNorm(nn.Module):
    """Upstream's GroupLayerNorm: per node group, (x - mean) / (std + eps) with the unbiased std, mean and
    std detached (upstream's choice), then a per-node affine gamma/beta."""

    def __init__(self, channel_groups: torch.Tensor, eps: float = 1e-1, affine: bool = True):
        super().__init__()
        self.register_buffer("channel_groups", channel_groups.clone())
        self.register_buffer("n_channels", torch.unique(channel_groups, return_counts=True)[1])
        self.eps = eps
        if affine:
            n = int(channel_groups.max()) + 1
            self.gamma = nn.Parameter(torch.ones(n))
            self.beta = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.channel_groups
        n = int(g.max()) + 1
        cnt = self.n_channels.to(x.dtype)
        mean = x.new_zeros(x.shape[0], n).index_add_(1, g, x) / cnt
        dev = (x - mean[:, g]) ** 2
        std = (x.new_zeros(x.shape[0], n).index_add_(1, g, dev) / (cnt - 1)) ** 0.5
        mean, std = mean.detach(), std.detach()
        x = (x - mean[:, g]) / (std[:, g] + self.eps)
        if hasattr(self, "gamma"):
            x = x * self.gamma[g].unsqueeze(0) + self.beta[g].unsqueeze(0)
        return x


class NodeMLP(nn.Module):
    def __init__(self, cpn: int, hidden: int, nonlin, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(cpn, hidden), nn.LayerNorm(hidden), nonlin(), nn.Dropout(dropout),
                                 nn.Linear(hidden, cpn), nn.Dropout(dropout))

    def forward(self, x):
        return self.mlp(x)


class ResBlock(nn.Module):
    """One upstream ResBlock. ``probe_pre`` sees lin_in's output, ``probe_post`` lin_out's input (Identity
    modules without state, the hook points of edge inference)."""

    def __init__(self, lin_in: SparseLinear, lin_out: SparseLinear, channel_groups: torch.Tensor, *, norm: str,
                 nonlin, norm_first: bool, residual: bool, learn_residual: bool, node_mlp: bool,
                 node_mlp_hidden: int, dropout: float, affine: bool):
        super().__init__()
        self.register_buffer("channel_groups", channel_groups.clone())
        self.n_nodes = int(channel_groups.max()) + 1
        self.channels_per_node = channel_groups.numel() // self.n_nodes
        self.residual, self.norm_first, self.dropout = residual, norm_first, dropout
        self.lin_in, self.lin_out = lin_in, lin_out
        c = channel_groups.numel()
        if norm == "layer":
            self.norm = GroupLayerNorm(channel_groups, affine=affine)
        elif norm == "batch":
            self.norm = nn.BatchNorm1d(c, eps=1e-3, affine=affine)
        else:
            self.norm = nn.Identity()
        self.nonlin = nonlin()
        if learn_residual:
            self.residual_weight = nn.Parameter(torch.tensor(1.0))
        self.mlp = NodeMLP(self.channels_per_node, node_mlp_hidden, nonlin, dropout) if node_mlp else None
        self.probe_pre = nn.Identity()
        self.probe_post = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.probe_pre(self.lin_in(x))
        if self.norm_first:
            out = self.nonlin(self.norm(out))
        else:
            out = self.norm(self.nonlin(out))
        out = nn.functional.dropout(out, p=self.dropout, training=self.training)
        if self.mlp is not None:
            b = out.shape[0]
            out = self.mlp(out.view(b, self.n_nodes, self.channels_per_node)).reshape(b, -1)
        out = self.lin_out(self.probe_post(out))
        if self.residual:
            w = self.residual_weight.relu() if hasattr(self, "residual_weight") else 1.0
            out = out + w * x
        return out


class _Probe:
    """What fadiag's capture hooks for one block: ``.norm`` is the probe module of the chosen point."""

    def __init__(self, module: nn.Module):
        self.norm = module


class UpstreamGSNN(nn.Module):
    """Upstream GSNN's modules and state-dict keys; see the module docstring for the arguments."""

    is_upstream_gsnn = True
    #: Upstream FunctionEdgeInferer's defaults, used by ``fadiag edges`` when the spec does not set them.
    edge_defaults = {"norm": "l1", "agg": "sum", "loss": "mse"}

    def __init__(self, edge_index_dict: dict | None = None, node_names_dict: dict | None = None,
                 channels: int | None = None, layers: int | None = None, *, n_input: int | None = None,
                 n_function: int | None = None, n_output: int | None = None, dropout: float = 0.0,
                 nonlin: str = "elu", bias: bool | None = None, share_layers: bool | None = None,
                 add_function_self_edges: bool = True, norm: str | None = None, norm_first: bool = True,
                 residual: bool = True, learn_residual: bool | None = None, node_mlp: bool | None = None,
                 node_mlp_hidden: int = 128, affine: bool | None = None, node_attn: bool = False,
                 where: str = "pre"):
        super().__init__()
        if node_attn:
            raise ValueError("gsnn-upstream: node_attn is not supported")
        if str(nonlin).lower() not in NONLINS:
            raise ValueError(f"gsnn-upstream: nonlin must be one of {', '.join(NONLINS)}, got {nonlin!r}")
        if norm is not None and norm not in NORMS:
            raise ValueError(f"gsnn-upstream: norm {norm!r} is not supported (supported: {', '.join(NORMS)})")
        if where not in ("pre", "post"):
            raise ValueError(f"gsnn-upstream: where must be pre or post, got {where!r}")
        self._opts = dict(dropout=float(dropout), nonlin=NONLINS[str(nonlin).lower()], bias=bias,
                          share_layers=share_layers, norm=norm, norm_first=bool(norm_first), residual=bool(residual),
                          learn_residual=learn_residual, node_mlp=node_mlp, node_mlp_hidden=int(node_mlp_hidden),
                          affine=affine)
        self.where = where
        self.node_names = list((node_names_dict or {}).get("function", [])) or None
        self.ResBlocks = nn.ModuleList()
        self.built = False
        if edge_index_dict is not None:
            names = node_names_dict or {}
            ni = n_input if n_input is not None else len(names.get("input", []))
            nf = n_function if n_function is not None else len(names.get("function", []))
            no = n_output if n_output is not None else len(names.get("output", []))
            for k, v in (("channels", channels), ("layers", layers), ("n_input", ni), ("n_function", nf),
                         ("n_output", no)):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"gsnn-upstream: {k} must be a positive integer, got {v!r}")
            ei, im, om = hetero_to_homo(edge_index_dict, ni, nf, no)
            fn = (~(im | om)).nonzero(as_tuple=True)[0]
            if add_function_self_edges:
                ei = torch.cat((ei, torch.stack((fn, fn))), dim=1)
            w_in, w_out, c, groups = conv_indices(ei, channels, fn)
            self._build(ei, im, om, [(w_in, w_out, groups)] * layers, c, defaults=True)
        elif any(v is not None for v in (channels, layers, n_input, n_function, n_output)):
            raise ValueError("gsnn-upstream: pass edge_index_dict with the graph arguments, or none of them "
                             "(the structure is then read from the checkpoint; node_names_dict may still "
                             "name the nodes)")

    # ------------------------------------------------------------------------------------------ build
    def _build(self, edge_index, in_mask, out_mask, per_block: list, c: int, *, defaults: bool,
               keys: dict | None = None):
        o = dict(self._opts)
        if defaults:  # upstream's constructor defaults for what was not given
            for k, v in (("bias", True), ("share_layers", True), ("norm", "layer"), ("learn_residual", True),
                         ("node_mlp", True), ("affine", True)):
                o[k] = v if o[k] is None else o[k]
        for name in ("edge_index", "input_node_mask", "output_node_mask", "function_edge_mask",
                     "input_edge_mask", "output_edge_mask"):
            self._buffers.pop(name, None)
        self.register_buffer("output_node_mask", out_mask.to(torch.bool))
        self.register_buffer("input_node_mask", in_mask.to(torch.bool))
        self.register_buffer("edge_index", edge_index.to(torch.long))
        fn = (~(in_mask | out_mask)).nonzero(as_tuple=True)[0]
        f_mask = torch.isin(edge_index[0], fn) & torch.isin(edge_index[1], fn)
        i_mask = torch.isin(edge_index[0], in_mask.nonzero(as_tuple=True)[0]) & torch.isin(edge_index[1], fn)
        self.register_buffer("function_edge_mask", f_mask)
        self.register_buffer("input_edge_mask", i_mask)
        self.register_buffer("output_edge_mask", ~(f_mask | i_mask))
        e = edge_index.shape[1]
        blocks = []
        shared = None
        for w_in, w_out, groups in per_block:
            if o["share_layers"] and shared is not None:
                lin_in, lin_out = shared
            else:
                lin_in = SparseLinear(w_in, (e, c), bias=o["bias"])
                lin_out = SparseLinear(w_out, (c, e), bias=o["bias"])
                shared = (lin_in, lin_out)
            blocks.append(ResBlock(lin_in, lin_out, groups, norm=o["norm"], nonlin=o["nonlin"],
                                   norm_first=o["norm_first"], residual=o["residual"],
                                   learn_residual=o["learn_residual"], node_mlp=o["node_mlp"],
                                   node_mlp_hidden=(keys or {}).get("node_mlp_hidden", o["node_mlp_hidden"]),
                                   dropout=o["dropout"], affine=o["affine"]))
        self.ResBlocks = nn.ModuleList(blocks)
        self.layers = len(blocks)
        self.built = True

    def build_from_state_dict(self, sd: dict) -> None:
        """Rebuild the structure from an upstream state dict's own buffers and shapes (no-op once built)."""
        if self.built:
            return
        need = ["edge_index", "input_node_mask", "output_node_mask"]
        missing = [k for k in need if k not in sd]
        if missing:
            raise ValueError(f"gsnn-upstream: the checkpoint lacks {', '.join(missing)} (not an upstream GSNN "
                             "state dict?); or give the graph as model.args")
        n_layers = 0
        while f"ResBlocks.{n_layers}.lin_in.indices" in sd:
            n_layers += 1
        if n_layers == 0:
            raise ValueError("gsnn-upstream: the checkpoint has no ResBlocks.0.lin_in.indices")
        o = self._opts
        p = "ResBlocks.0."
        inferred = {
            "bias": f"{p}lin_in.bias" in sd,
            "learn_residual": f"{p}residual_weight" in sd,
            "node_mlp": f"{p}mlp.mlp.0.weight" in sd,
            "norm": ("layer" if f"{p}norm.n_channels" in sd else "batch" if f"{p}norm.running_mean" in sd
                     else "none"),
            "affine": f"{p}norm.gamma" in sd or f"{p}norm.weight" in sd,
            "share_layers": all(torch.equal(sd[f"ResBlocks.{i}.lin_in.values"], sd[f"{p}lin_in.values"])
                                and torch.equal(sd[f"ResBlocks.{i}.lin_in.indices"], sd[f"{p}lin_in.indices"])
                                for i in range(n_layers)) if n_layers > 1 else True,
        }
        if inferred["norm"] == "none" and any(k.startswith(f"{p}norm.") for k in sd):
            raise ValueError("gsnn-upstream: unsupported norm in the checkpoint (supported: layer, batch, none)")
        if any(k.startswith(f"{p}node_attn.") for k in sd):
            raise ValueError("gsnn-upstream: node attention is not supported")
        for k, v in inferred.items():
            if o[k] is None:
                o[k] = v
        ei = sd["edge_index"].to(torch.long)
        c = int(sd[f"{p}channel_groups"].numel())
        per_block = [(sd[f"ResBlocks.{i}.lin_in.indices"].to(torch.long),
                      sd[f"ResBlocks.{i}.lin_out.indices"].to(torch.long),
                      sd[f"ResBlocks.{i}.channel_groups"].to(torch.long)) for i in range(n_layers)]
        keys = {}
        if o["node_mlp"] and f"{p}mlp.mlp.0.weight" in sd:
            keys["node_mlp_hidden"] = int(sd[f"{p}mlp.mlp.0.weight"].shape[0])
        self._build(ei, sd["input_node_mask"], sd["output_node_mask"], per_block, c, defaults=True, keys=keys)
        if self.node_names is not None and len(self.node_names) != self.n_nodes:
            raise ValueError(f"gsnn-upstream: node_names_dict names {len(self.node_names)} function nodes, the "
                             f"checkpoint has {self.n_nodes}")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.build_from_state_dict(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------------------- edge inference
    @property
    def channel_groups(self) -> torch.Tensor:
        return self.ResBlocks[0].channel_groups

    @property
    def n_nodes(self) -> int:
        return int((~(self.input_node_mask | self.output_node_mask)).sum()) if self.built else 0

    @property
    def blocks(self) -> list:
        """Per block, the capture point of ``where`` (pre: lin_in's output; post: lin_out's input)."""
        return [_Probe(b.probe_pre if self.where == "pre" else b.probe_post) for b in self.ResBlocks]

    @property
    def known_edges(self) -> torch.Tensor:
        """Function -> function edges (2, E) of the homogeneous graph, self-loops dropped."""
        e = self.edge_index[:, self.function_edge_mask]
        return e[:, e[0] != e[1]]

    # ------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.built:
            raise RuntimeError("gsnn-upstream: the model is built from its checkpoint; load a state dict first")
        b = x.shape[0]
        n_total = self.input_node_mask.numel()
        x_node = x.new_zeros(b, n_total)
        x_node[:, self.input_node_mask.nonzero(as_tuple=True)[0]] = x
        h = x_node[:, self.edge_index[0]]
        for blk in self.ResBlocks:
            h = blk(h)
        if self.ResBlocks and self.ResBlocks[0].residual:
            h = h / torch.tensor(self.layers ** 0.5, dtype=torch.float32)
        dst = self.edge_index[1]
        out_nodes = self.output_node_mask.nonzero(as_tuple=True)[0]
        m = torch.isin(dst, out_nodes)
        out = h.new_zeros(b, n_total).index_add_(1, dst[m], h[:, m])
        deg = torch.bincount(dst, minlength=n_total).clamp_min(1).to(h.dtype)
        return (out / deg.sqrt())[:, self.output_node_mask]

    def extra_repr(self) -> str:
        return f"layers={getattr(self, 'layers', 0)}, n_function={self.n_nodes}, where={self.where}"
