"""Batches of network graphs as torch tensors: `collate` and the way back to networks.

Two layouts:

* `DenseGraphs`: networks of one shape (same layer widths and kernel layout; activations
  may differ per network), stacked: node features `[B, N, d_v]`, edge features
  `[B, E, d_e]`, and per layer views `[B, n_l, n_{l-1}, d_e]`. The fast path.
* `SparseGraphs`: the disjoint union of graphs of any architectures, PyTorch Geometric
  style (`edge_index`, per-node `batch` vector, `ptr`), aggregated with index sums.

Both carry each node's `"auto"` group code (from its network's activations), role,
position and layer, and the edge mask; `to_networks` decodes features laid out like the
batch (the equivariant head's output) back to `Network`s.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from einops import rearrange

import torch
from scalegmn.weightgraph import (
    GraphError,
    GroupKind,
    Network,
    NetworkSpec,
    from_dense_batch,
    from_graph,
    layout,
    to_dense_batch,
    to_graph,
    to_graph_batch,
)
from torch import Tensor

from .groups import group_code


class BatchError(ValueError):
    """A batch that cannot be built or does not fit the model."""


@lru_cache(maxsize=256)
def _auto_codes(signature: str) -> tuple[int, ...]:
    spec = NetworkSpec.model_validate_json(signature)
    codes = [int(GroupKind.PERMUTATION)] * spec.widths[0]
    for k, layer in enumerate(spec.layers[:-1]):
        codes += [group_code(layer.activation)] * spec.widths[k + 1]
    return tuple(codes + [int(GroupKind.PERMUTATION)] * spec.widths[-1])


def _shape_key(spec: NetworkSpec) -> str:
    """The spec without what does not change the graph's shape (activations, w0, offset)."""
    d = spec.model_dump(mode="json")
    d.pop("output_offset", None)
    for layer in d["layers"]:
        for k in ("activation", "w0", "negative_slope"):
            layer.pop(k, None)
    return json.dumps(d, sort_keys=True)


def _t(a: Any, dtype: torch.dtype | None = None) -> Tensor:
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:
        a = a.copy()
    t = torch.from_numpy(a)
    return t if dtype is None else t.to(dtype)


@dataclass(frozen=True, eq=False)
class DenseGraphs:
    """Graphs of `B` networks of one shape, stacked (see the module docstring).

    Attributes:
        node_features: `[B, N, d_v]` (biases; input nodes hold the collate-time value).
        edge_features: `[B, E, d_e]`, layer blocks in order, target-major inside a layer.
        node_group: `[B, N]` `"auto"` group codes (`scalegmn.weightgraph.GroupKind`).
        node_layer, node_role, node_pos: `[N]`.
        edge_layer: `[E]` weight layer 1..L.
        edge_mask: `[E, d_e]` True where an edge vector holds a weight.
        widths: `(n_0, ..., n_L)`.
        node_offsets: `L + 2` first node index of each layer.
        edge_offsets: `L + 1` first edge index of each weight layer.
        layer_codes: per graph layer, the group code shared by every network of the batch,
            or `None` when networks differ there.
        specs: the architecture of each network.
    """

    node_features: Tensor
    edge_features: Tensor
    node_group: Tensor
    node_layer: Tensor
    node_role: Tensor
    node_pos: Tensor
    edge_layer: Tensor
    edge_mask: Tensor
    widths: tuple[int, ...]
    node_offsets: tuple[int, ...]
    edge_offsets: tuple[int, ...]
    layer_codes: tuple[int | None, ...]
    specs: tuple[NetworkSpec, ...]

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def n_layers(self) -> int:
        """Number of weight layers L."""
        return len(self.widths) - 1

    @property
    def d_edge(self) -> int:
        """Edge vector length of the batch."""
        return int(self.edge_features.shape[-1])

    def layer_nodes(self, k: int, x: Tensor | None = None) -> Tensor:
        """Nodes of graph layer `k` (0..L) of `x` (default the node features): `[B, n_k, c]`."""
        x = self.node_features if x is None else x
        return x[:, self.node_offsets[k] : self.node_offsets[k + 1]]

    def layer_edges(self, l: int, x: Tensor | None = None) -> Tensor:  # noqa: E741
        """Edges of weight layer `l` (1..L): a view `[B, n_l, n_{l-1}, c]`."""
        x = self.edge_features if x is None else x
        lo, hi = self.edge_offsets[l - 1], self.edge_offsets[l]
        return rearrange(x[:, lo:hi], "b (t s) c -> b t s c", t=self.widths[l], s=self.widths[l - 1])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> DenseGraphs:
        """A copy on `device`, features cast to `dtype` (index tensors keep their dtype)."""
        return _move(self, device, dtype)

    def with_features(self, node_features: Tensor, edge_features: Tensor) -> DenseGraphs:
        """The same graphs with new features (e.g. an equivariant head's edited graphs)."""
        return dataclasses.replace(self, node_features=node_features, edge_features=edge_features)

    def to_networks(self) -> list[Network]:
        """Decode the features back to networks (exact inverse of `collate`)."""
        node = self.node_features.detach().cpu().numpy()
        edge = self.edge_features.detach().cpu().numpy()
        if all(s == self.specs[0] for s in self.specs):
            return from_dense_batch((node, edge), self.specs[0])
        return [from_graph((node[b], edge[b]), s) for b, s in enumerate(self.specs)]


@dataclass(frozen=True, eq=False)
class SparseGraphs:
    """The disjoint union of graphs of any architectures (PyTorch Geometric layout).

    Attributes:
        node_features: `[N, d_v]` (PyG's `x`).
        edge_features: `[E, d_e]` (PyG's `edge_attr`), padded to one `d_e`.
        edge_index: `[2, E]` row 0 source, row 1 target, offset per graph.
        node_batch: `[N]` graph id of each node (PyG's `batch`).
        edge_batch: `[E]` graph id of each edge.
        node_group: `[N]` `"auto"` group codes.
        node_layer, node_role, node_pos: `[N]`.
        edge_layer, edge_role: `[E]`.
        edge_mask: `[E, d_e]`.
        node_ptr, edge_ptr: `[B + 1]` offsets of each graph (PyG's `ptr`).
        specs: the architecture of each graph.
    """

    node_features: Tensor
    edge_features: Tensor
    edge_index: Tensor
    node_batch: Tensor
    edge_batch: Tensor
    node_group: Tensor
    node_layer: Tensor
    node_role: Tensor
    node_pos: Tensor
    edge_layer: Tensor
    edge_role: Tensor
    edge_mask: Tensor
    node_ptr: Tensor
    edge_ptr: Tensor
    specs: tuple[NetworkSpec, ...]

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def x(self) -> Tensor:
        """PyG name of the node features."""
        return self.node_features

    @property
    def edge_attr(self) -> Tensor:
        """PyG name of the edge features."""
        return self.edge_features

    @property
    def batch(self) -> Tensor:
        """PyG name of the node-to-graph vector."""
        return self.node_batch

    @property
    def d_edge(self) -> int:
        """Edge vector length of the batch."""
        return int(self.edge_features.shape[-1])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SparseGraphs:
        """A copy on `device`, features cast to `dtype` (index tensors keep their dtype)."""
        return _move(self, device, dtype)

    def with_features(self, node_features: Tensor, edge_features: Tensor) -> SparseGraphs:
        """The same graphs with new features (e.g. an equivariant head's edited graphs)."""
        return dataclasses.replace(self, node_features=node_features, edge_features=edge_features)

    def to_networks(self) -> list[Network]:
        """Decode the features back to networks (exact inverse of `collate`)."""
        node = self.node_features.detach().cpu().numpy()
        edge = self.edge_features.detach().cpu().numpy()
        nptr, eptr = self.node_ptr.tolist(), self.edge_ptr.tolist()
        out = []
        for k, spec in enumerate(self.specs):
            d_e = layout(spec).d_edge
            out.append(
                from_graph((node[nptr[k] : nptr[k + 1]], edge[eptr[k] : eptr[k + 1], :d_e]), spec)
            )
        return out

    def to_pyg(self) -> Any:
        """The same batch as a `torch_geometric.data.Batch` (extra fields kept by name).

        The result runs through `ScaleGMN.forward_pyg`; `spec` lists each graph's architecture.
        """
        from torch_geometric.data import Batch

        b = Batch(batch=self.node_batch, ptr=self.node_ptr, **self._pyg_fields())
        b["edge_batch"] = self.edge_batch
        b["spec"] = list(self.specs)
        return b

    def _pyg_fields(self) -> dict[str, Any]:
        fields = {"x": self.node_features, "edge_attr": self.edge_features,
                  "edge_index": self.edge_index}
        fields.update({name: getattr(self, name) for name in _PYG_EXTRA})
        return fields


_PYG_EXTRA = ("node_group", "node_layer", "node_role", "node_pos", "edge_layer", "edge_role",
              "edge_mask")
"""Fields of a scalegmn graph in PyG form besides `x`, `edge_attr`, `edge_index`, `spec`."""


def to_pyg_data(network: Network, dtype: torch.dtype | None = None, d_edge: int | None = None
                ) -> Any:
    """The graph of one network as a `torch_geometric.data.Data`, for PyG datasets and loaders.

    `torch_geometric.data.Batch.from_data_list` (what PyG's `DataLoader` calls) batches these
    into the input of `ScaleGMN.forward_pyg`.

    Args:
        network: the network.
        dtype: floating dtype of the features (default `torch.get_default_dtype()`).
        d_edge: pad the edge vectors to this length (networks of different kernel sizes
            share a batch only at one length: use the model's `d_edge_in`).

    Returns:
        A `Data` with `x` `[N, 1]`, `edge_index` `[2, E]`, `edge_attr` `[E, d_e]`, the
        per-node and per-edge fields of `SparseGraphs` and the network's `spec`.

    Example:
        ```python
        from torch_geometric.loader import DataLoader
        from scalegmn.weightgraph import NetworkSpec, random_network
        from scalegmn.torch import to_pyg_data

        nets = [random_network(NetworkSpec.mlp([2, 8, 1]), rng=k) for k in range(8)]
        loader = DataLoader([to_pyg_data(n) for n in nets], batch_size=4)
        ```
    """
    from torch_geometric.data import Data

    if not isinstance(network, Network):
        raise TypeError(f"to_pyg_data expects a scalegmn.weightgraph.Network, got {type(network).__name__}")
    dtype = dtype or torch.get_default_dtype()
    g = _sparse([network], dtype, d_edge)
    return Data(spec=network.spec, **g._pyg_fields())


def from_pyg(data: Any) -> SparseGraphs:
    """The `SparseGraphs` of a PyG `Batch` (or one `Data`) of scalegmn graphs.

    Args:
        data: from `SparseGraphs.to_pyg()`, or `Batch.from_data_list` of `to_pyg_data`.

    Returns:
        The disjoint union with the same tensors (`x` as `node_features` `[N, 1]`, `edge_attr`
        as `edge_features` `[E, d_e]`, ...), per-graph offsets recomputed from `batch`.

    Raises:
        BatchError: a field of a scalegmn graph is missing or does not fit the others.
    """
    missing = [k for k in ("x", "edge_attr", "edge_index", "spec", *_PYG_EXTRA)
               if getattr(data, k, None) is None]
    if missing:
        raise BatchError(
            f"the PyG batch lacks the field(s) {', '.join(missing)} of a scalegmn graph: build "
            "each Data with scalegmn.torch.to_pyg_data(network)"
        )
    spec = data.spec
    specs = tuple(spec) if isinstance(spec, list | tuple) else (spec,)
    if not all(isinstance(s, NetworkSpec) for s in specs):
        raise BatchError("the PyG batch's `spec` field must hold NetworkSpecs (see to_pyg_data)")
    x, edge_index = data.x, data.edge_index
    node_batch = getattr(data, "batch", None)
    if node_batch is None:
        node_batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    counts = torch.bincount(node_batch, minlength=len(specs))
    want = torch.tensor([layout(s).n_nodes for s in specs], device=counts.device)
    if counts.shape != want.shape or not torch.equal(counts, want):
        raise BatchError(
            f"the PyG batch has {counts.tolist()} nodes per graph but its specs need "
            f"{want.tolist()}: keep the batch as PyG's Batch.from_data_list built it"
        )
    edge_batch = node_batch[edge_index[0]]
    zero = counts.new_zeros(1)
    return SparseGraphs(
        node_features=x,
        edge_features=data.edge_attr,
        edge_index=edge_index,
        node_batch=node_batch,
        edge_batch=edge_batch,
        node_ptr=torch.cat([zero, counts.cumsum(0)]),
        edge_ptr=torch.cat([zero, torch.bincount(edge_batch, minlength=len(specs)).cumsum(0)]),
        specs=specs,
        **{k: data[k] for k in _PYG_EXTRA},
    )


Graphs = DenseGraphs | SparseGraphs


def _move(batch: Any, device: torch.device | str | None, dtype: torch.dtype | None) -> Any:
    changes: dict[str, Tensor] = {}
    for f in dataclasses.fields(batch):
        v = getattr(batch, f.name)
        if isinstance(v, Tensor):
            cast = dtype if (dtype is not None and v.is_floating_point()) else None
            changes[f.name] = v.to(device=device, dtype=cast)
    return dataclasses.replace(batch, **changes)


def collate(
    networks: Sequence[Network], dtype: torch.dtype | None = None, *, dense: bool | None = None
) -> Graphs:
    """Batch networks for `ScaleGMN`.

    Networks of one shape (equal layer widths and kernel layout; activations may differ)
    become a `DenseGraphs` (the fast path); networks of different architectures a
    `SparseGraphs` disjoint union.

    Args:
        networks: the networks.
        dtype: floating dtype of the features (default `torch.get_default_dtype()`).
        dense: force the layout (`True` raises if the shapes differ; `False` always builds
            the disjoint union); default: dense when possible.

    Returns:
        A `DenseGraphs` or a `SparseGraphs` holding `len(networks)` graphs.

    Raises:
        TypeError: if an element is not a `Network`.
        BatchError: for an empty list, or `dense=True` with differing shapes.
    """
    networks = list(networks)
    if not networks:
        raise BatchError("collate needs at least one network")
    for k, n in enumerate(networks):
        if not isinstance(n, Network):
            raise TypeError(
                f"collate expects scalegmn.weightgraph.Network objects; item {k} is "
                f"{type(n).__name__} (convert modules with scalegmn.weightgraph.from_torch)"
            )
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"collate needs a floating dtype, got {dtype}")
    specs = tuple(n.spec for n in networks)
    same_spec = all(s == specs[0] for s in specs)
    same_shape = same_spec or len({_shape_key(s) for s in specs}) == 1
    if dense and not same_shape:
        raise BatchError(
            "dense=True needs networks of one shape (same widths and kernels); these differ: "
            "use dense=None for a disjoint-union batch"
        )
    if dense is False or not same_shape:
        return _sparse(networks, dtype)
    return _dense(networks, dtype, same_spec)


def _dense(networks: list[Network], dtype: torch.dtype, same_spec: bool) -> DenseGraphs:
    specs = tuple(n.spec for n in networks)
    lay = layout(specs[0])
    if same_spec:
        db = to_dense_batch(networks)
        node, edge = db.node_features, db.edge_features
    else:
        graphs = [to_graph(n) for n in networks]
        node = np.stack([g.node_features for g in graphs])
        edge = np.stack([g.edge_features for g in graphs])
    sigs = {id(s): s.model_dump_json() for s in specs}
    codes = np.array([_auto_codes(sigs[id(s)]) for s in specs], dtype=np.int64)
    offs = tuple(int(o) for o in lay.node_offsets)
    layer_codes = []
    for k in range(len(lay.widths)):
        block = codes[:, offs[k] : offs[k + 1]]
        layer_codes.append(int(block.flat[0]) if (block == block.flat[0]).all() else None)
    return DenseGraphs(
        node_features=_t(node, dtype),
        edge_features=_t(edge, dtype),
        node_group=_t(codes),
        node_layer=_t(lay.node_layer),
        node_role=_t(lay.node_role),
        node_pos=_t(lay.node_pos),
        edge_layer=_t(lay.edge_layer),
        edge_mask=_t(lay.edge_mask),
        widths=tuple(lay.widths),
        node_offsets=offs,
        edge_offsets=tuple(int(o) for o in lay.edge_offsets),
        layer_codes=tuple(layer_codes),
        specs=specs,
    )


def _sparse(networks: list[Network], dtype: torch.dtype, d_edge: int | None = None) -> SparseGraphs:
    try:
        gb = to_graph_batch(networks, d_edge=d_edge)
    except GraphError as err:  # a `d_edge` below the networks' longest edge vector
        raise BatchError(str(err)) from None
    codes = np.concatenate([_auto_codes(n.spec.model_dump_json()) for n in networks]).astype(np.int64)
    return SparseGraphs(
        node_features=_t(gb.node_features, dtype),
        edge_features=_t(gb.edge_features, dtype),
        edge_index=_t(gb.edge_index),
        node_batch=_t(gb.node_batch),
        edge_batch=_t(gb.edge_batch),
        node_group=_t(codes),
        node_layer=_t(gb.node_layer),
        node_role=_t(gb.node_role),
        node_pos=_t(gb.node_pos),
        edge_layer=_t(gb.edge_layer),
        edge_role=_t(gb.edge_role),
        edge_mask=_t(gb.edge_mask),
        node_ptr=_t(gb.node_ptr),
        edge_ptr=_t(gb.edge_ptr),
        specs=gb.specs,
    )


def to_networks(graphs: Graphs) -> list[Network]:
    """Decode a batch (or an equivariant head's output, laid out like it) to networks.

    Raises:
        TypeError: if `graphs` is not a batch from `collate`.
    """
    if not isinstance(graphs, DenseGraphs | SparseGraphs):
        raise TypeError(f"to_networks expects DenseGraphs or SparseGraphs, got {type(graphs).__name__}")
    return graphs.to_networks()
