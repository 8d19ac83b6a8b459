"""GSNN: a graph-structured residual network (docs/science.md §3).

N function nodes, each owning ``channels_per_node`` hidden channels (C = N · channels_per_node;
``channel_groups[c]`` is the node of channel c). The residual stream h (B, C) goes through ``depth``
blocks

    h <- h + relu(sparse_linear(norm(h)))

where sparse_linear only connects channels of node i to channels of node j when i -> j is an edge of
the graph or i == j: a dense weight times a fixed 0/1 mask. ``block.norm``'s input is the pre-norm
activation and its output the post-norm one, which is what edge inference hooks.

Layout (the duck-typed residual contract of DESIGN.md): embed = Linear(in_dim, C) -> h_0;
blocks[0..depth-1] -> h_1..h_depth; out = out_head(out_ln(h_depth)) with out_head = Linear(C, out_dim);
optionally embed / out_head are masked so that each input / output belongs to one node;
``model(x, return_hidden=True)`` returns (out, [h_0, ..., h_depth]).

The graph, masks and channel groups are rebuilt from the constructor arguments (plain JSON/YAML values),
so they are non-persistent buffers: the state dict holds weights only.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["GSNN", "MaskedLinear", "GSNNBlock"]


class MaskedLinear(nn.Linear):
    """y = x (W ⊙ mask)ᵀ + b with a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, mask: torch.Tensor, bias: bool = True):
        out_f, in_f = mask.shape
        super().__init__(in_f, out_f, bias=bias)
        self.register_buffer("mask", mask.to(torch.float32), persistent=False)
        with torch.no_grad():
            # masked-out weights start (and, without weight decay on them, stay) at exactly 0
            self.weight.mul_(self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class GSNNBlock(nn.Module):
    """h -> h + relu(lin(norm(h))); ``norm`` is the hook point for pre/post-norm activations."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        c = mask.shape[0]
        self.norm = nn.LayerNorm(c)
        self.lin = MaskedLinear(mask)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.relu(self.lin(self.norm(h)))


class GSNN(nn.Module):
    """Graph-structured residual network over ``n_nodes`` function nodes.

    Args:
        in_dim: input features; out_dim: outputs.
        n_nodes: N; channels_per_node: k, so C = N·k hidden channels.
        depth: number of residual blocks (L).
        edges: list of [src, dst] node pairs (the known graph), 0 <= src, dst < N.
        input_nodes: optional, length in_dim: input k feeds only node input_nodes[k]'s channels
            (default: embed is a dense Linear).
        output_nodes: optional, length out_dim: output k reads only node output_nodes[k]'s channels
            (default: out_head is a dense Linear).
    Attributes:
        blocks: ModuleList of GSNNBlock; channel_groups: (C,) LongTensor, channel -> node
            (channel c belongs to node c // k); edge_index: (2, E) LongTensor of (src, dst);
        embed, out_ln, out_head: input projection, final LayerNorm, output head.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        n_nodes: int,
        channels_per_node: int,
        depth: int,
        edges: Sequence[Sequence[int]] = (),
        input_nodes: Sequence[int] | None = None,
        output_nodes: Sequence[int] | None = None,
    ):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim), ("n_nodes", n_nodes),
                        ("channels_per_node", channels_per_node), ("depth", depth)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GSNN: {name} must be a positive integer, got {v!r}")
        pairs = []
        for e in edges:
            if len(e) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in e):
                raise ValueError(f"GSNN: each edge must be a [src, dst] pair of ints, got {e!r}")
            s, d = e
            if not (0 <= s < n_nodes and 0 <= d < n_nodes):
                raise ValueError(f"GSNN: edge [{s}, {d}] has a node id outside [0, {n_nodes - 1}]")
            pairs.append((s, d))
        self.in_dim, self.out_dim = in_dim, out_dim
        self.n_nodes, self.channels_per_node, self.depth = n_nodes, channels_per_node, depth
        c = n_nodes * channels_per_node
        groups = torch.arange(c) // channels_per_node
        edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).T.contiguous()
        self.register_buffer("channel_groups", groups, persistent=False)
        self.register_buffer("edge_index", edge_index, persistent=False)

        adj = torch.eye(n_nodes, dtype=torch.bool)
        adj[edge_index[0], edge_index[1]] = True
        # weight[out_channel, in_channel] is live iff node(in) -> node(out) is an edge or the same node
        mask = adj[groups[None, :], groups[:, None]]
        self.input_nodes = self._node_list(input_nodes, in_dim, n_nodes, "input_nodes")
        self.output_nodes = self._node_list(output_nodes, out_dim, n_nodes, "output_nodes")
        if self.input_nodes is None:
            self.embed = nn.Linear(in_dim, c)
        else:
            # input k feeds only the channels of node input_nodes[k]
            node_of_input = torch.tensor(self.input_nodes)
            self.embed = MaskedLinear(groups[:, None] == node_of_input[None, :])
        self.blocks = nn.ModuleList(GSNNBlock(mask) for _ in range(depth))
        self.out_ln = nn.LayerNorm(c)
        if self.output_nodes is None:
            self.out_head = nn.Linear(c, out_dim)
        else:
            # output k reads only the channels of node output_nodes[k]
            node_of_output = torch.tensor(self.output_nodes)
            self.out_head = MaskedLinear(node_of_output[:, None] == groups[None, :])

    @staticmethod
    def _node_list(nodes, length: int, n_nodes: int, name: str) -> list[int] | None:
        if nodes is None:
            return None
        nodes = list(nodes)
        if len(nodes) != length or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n_nodes for v in nodes
        ):
            raise ValueError(f"GSNN: {name} must list {length} node ids in [0, {n_nodes - 1}]")
        return nodes

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        h = self.embed(x)
        hidden = [h]
        for block in self.blocks:
            h = block(h)
            hidden.append(h)
        out = self.out_head(self.out_ln(h))
        return (out, hidden) if return_hidden else out
