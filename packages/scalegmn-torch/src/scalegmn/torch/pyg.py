"""The ScaleGMN layer as a PyTorch Geometric `MessagePassing` layer.

`ScaleGMNConv` runs one layer of `docs/model.md` on PyG's `(x, edge_index, edge_attr)`:
`message` builds the forward (and, bidirectional, backward) messages on the edges, PyG's
sum aggregation adds them up per receiver, `update` is the node ScaleEq, and `edge_update`
(through `edge_updater`) the edge update. The maps are the ones of `GMNLayer` (the same
parameters, the same `ScaleEq` / `ReScaleEq` functions); only the gathering and summing are
PyG's. `ScaleGMN.forward_pyg` runs a whole model this way on a `torch_geometric.data.Batch`.
"""

from __future__ import annotations

from torch_geometric.nn import MessagePassing

import torch
from scalegmn.weightgraph import ScaleGMNConfig
from torch import Tensor

from .groups import Grp
from .layer import EdgeBlock, GMNLayer


def _ident(x: Tensor) -> Tensor:
    return x


# PyG hands `message` rows already gathered onto the edges (`x_i`, `x_j`), so the block's
# gathers and sums are the identity.
_ON_EDGES = EdgeBlock(0, 0, _ident, _ident, _ident, _ident)


class ScaleGMNConv(MessagePassing):
    """One ScaleGMN (ScaleGMN-B when bidirectional) layer as a `MessagePassing` layer.

    Args:
        layer: a `GMNLayer` whose parameters this layer uses (e.g. `model.layers[t]` of a
            `ScaleGMN`), or a `ScaleGMNConfig` to build a new one.
        edge_update: with a configuration, whether the layer updates edge states (default
            `config.edge_update`).

    Example:
        ```python
        import torch
        from scalegmn.torch import ScaleGMNConfig
        from scalegmn.torch.pyg import ScaleGMNConv

        conv = ScaleGMNConv(ScaleGMNConfig(d_hidden=8))
        x = torch.randn(5, 8)                                     # node states
        edge_index = torch.tensor([[0, 1, 2, 3], [2, 2, 4, 4]])  # row 0 source, row 1 target
        edge_attr = torch.randn(4, 8)                             # edge states
        group = torch.tensor([0, 0, 1, 1, 0])                     # 1: ReLU neurons (q > 0)
        x, edge_attr = conv(x, edge_index, edge_attr, group)
        ```
    """

    layer: GMNLayer
    """The parameters (checkpoint names as in `ScaleGMN.layers[t]`)."""

    def __init__(self, layer: GMNLayer | ScaleGMNConfig, edge_update: bool | None = None) -> None:
        super().__init__(aggr="sum", flow="source_to_target", node_dim=0)
        if isinstance(layer, ScaleGMNConfig):
            layer = GMNLayer(layer, layer.edge_update if edge_update is None else edge_update)
        elif not isinstance(layer, GMNLayer):
            raise TypeError(
                f"ScaleGMNConv expects a GMNLayer or a ScaleGMNConfig, got {type(layer).__name__}"
            )
        cfg = layer.cfg
        for name, on in (("io_mlps", cfg.io_mlps > 0),
                         ("positional_features", cfg.positional_features),
                         ("backward_edge_state", cfg.backward_edge_state)):
            if on:
                raise ValueError(
                    f"the PyTorch Geometric layer does not support {name}; run the model on a "
                    f"batch from scalegmn.torch.collate instead"
                )
        self.layer = layer

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, group: Tensor
                ) -> tuple[Tensor, Tensor]:
        """Apply the layer.

        Args:
            x: node states `[N, d_hidden]`.
            edge_index: `[2, E]`, row 0 source, row 1 target (edges point forward, from a
                layer of the network to the next).
            edge_attr: edge states `[E, d_hidden]`.
            group: `[N]` group code of each node as the model uses it (0 trivial, 1 scale,
                2 sign, 3 nonzero).

        Returns:
            The new node states `[N, d_hidden]` and edge states `[E, d_hidden]`.
        """
        lay = self.layer
        d = lay.cfg.d_hidden
        if x.shape[-1] != d or edge_attr.shape[-1] != d:
            raise ValueError(
                f"ScaleGMNConv has d_hidden={d} but got node states {tuple(x.shape)} and edge "
                f"states {tuple(edge_attr.shape)}; project the features to width {d} first"
            )
        grp = Grp.from_codes(group[:, None], x.dtype)
        y = lay.edge_linear(edge_attr)
        n_fwd = edge_index.shape[1]
        # Backward messages travel on the reversed edges, appended after the forward ones;
        # `aggregate` sums each half into its own columns.
        index = edge_index if lay.bwd is None else torch.cat([edge_index, edge_index.flip(0)], 1)
        h = self.propagate(index, x=x, y=y, norm=grp.norm, flip=grp.flip, n_fwd=n_fwd,
                           size=(x.shape[0], x.shape[0]))
        if lay.edge is None:
            return h, edge_attr
        p_src, p_dst = lay.edge_inputs(x if lay.head_out else h, grp)
        e = self.edge_updater(edge_index, p_src=p_src, p_dst=p_dst, gamma=y[:, y.shape[1] - lay.d_gamma:],
                              edge_attr=edge_attr, size=(x.shape[0], x.shape[0]))
        return h, e

    def message(self, x_i: Tensor, x_j: Tensor, y: Tensor, norm_i: Tensor, flip_i: Tensor,
                norm_j: Tensor, flip_j: Tensor, n_fwd: int) -> Tensor:
        """Messages to each receiver `i` from its sender `j`: `[E, d]` (`[2E, d]` bidirectional).

        On the first `n_fwd` rows (the edges) `j` is the source; on the reversed copies
        after them `i` is the original source, which receives the backward message.
        """
        lay = self.layer
        f = slice(0, n_fwd)
        m = lay.message_fwd(x_j[f], x_i[f], y, _ON_EDGES, Grp(norm_i[f], flip_i[f]))
        if lay.bwd is None:
            return m
        b = slice(n_fwd, None)
        d = lay.cfg.d_hidden
        mb = lay.message_bwd(x_i[b], x_j[b], y[:, d : 2 * d], _ON_EDGES, Grp(norm_i[b], flip_i[b]),
                             Grp(norm_j[b], flip_j[b]))
        return torch.cat([m, mb])

    def aggregate(self, inputs: Tensor, index: Tensor, n_fwd: int, ptr: Tensor | None = None,
                  dim_size: int | None = None) -> Tensor:
        """PyG's sum per receiver, per direction: `[N, d]` (`[N, 2d]` bidirectional)."""
        parts = [(inputs[:n_fwd], index[:n_fwd])]
        if inputs.shape[0] > n_fwd:
            parts.append((inputs[n_fwd:], index[n_fwd:]))
        return torch.cat([self.aggr_module(m, i, dim_size=dim_size, dim=self.node_dim)
                          for m, i in parts], -1)

    def update(self, inputs: Tensor, x: Tensor, norm: Tensor, flip: Tensor) -> Tensor:
        """Node update from the aggregated messages: `[N, d]`."""
        return self.layer.update_node(x, list(inputs.split(x.shape[-1], -1)), Grp(norm, flip))

    def edge_update(self, p_src_j: Tensor, p_dst_i: Tensor, gamma: Tensor, edge_attr: Tensor
                    ) -> Tensor:
        """Edge update from the new states of each edge's source `j` and target `i`: `[E, d]`."""
        return self.layer.update_edge(edge_attr, gamma, p_src_j + p_dst_i)
