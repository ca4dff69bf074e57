"""The graph of a network (one node per neuron/channel, one edge per weight) and back.

Node and edge order is fixed so that decoding is a reshape:

* nodes: layer 0 (inputs) first, then layer 1, ..., layer L (outputs); inside a layer,
  neuron order.
* edges: layer 1 first, ..., layer L; inside layer l, target-major: the edge for
  `W_l[i, j]` has index `edge_offset[l-1] + i * n_{l-1} + j`, source node `j` of layer
  `l-1`, target node `i` of layer `l`.

Edge vectors have length `d_e`: conv kernels are zero-padded, centred, to the largest
kernel `(KH, KW)` of the network and flattened; a dense weight is a 1x1 kernel (it sits in
the centre slot); a dense layer after `pooling="flatten"` of an `h x w` map carries the
`h*w` weights from one channel to one neuron in the first `h*w` slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from .errors import GraphError
from .network import Network
from .schemas import ConvLayer, NetworkSpec

ROLE_INPUT, ROLE_HIDDEN, ROLE_OUTPUT = 0, 1, 2


@dataclass(frozen=True)
class GraphLayout:
    """Index arrays shared by every network of one architecture (computed once per spec).

    Attributes:
        spec: the architecture.
        widths: neurons per layer `[n_0, ..., n_L]`.
        node_offsets: first node index of each layer (length `L + 2`, last = N).
        edge_offsets: first edge index of each layer's weights (length `L + 1`, last = E).
        kernel_grid: `(KH, KW)`, the largest kernel (1x1 for an MLP).
        d_edge: edge vector length.
        edge_index: `[2, E]` source row 0, target row 1.
        node_layer: `[N]` layer of each node (0..L).
        node_role: `[N]` 0 input, 1 hidden, 2 output.
        node_pos: `[N]` neuron index inside its layer.
        node_type: `[N]` input neuron i -> i, hidden layer l -> n_0 + l - 1, output neuron
            k -> n_0 + L - 1 + k.
        edge_layer: `[E]` layer `l` (1..L) of the weight.
        edge_role: `[E]` 0 from an input node, 2 into an output node (and not from an input),
            1 hidden to hidden.
        edge_type: `[E]` by source neuron (from inputs), by layer (hidden-hidden), by target
            neuron (into outputs).
        edge_mask: `[E, d_e]` True where the edge vector holds a real weight (not padding).
    """

    spec: NetworkSpec
    widths: tuple[int, ...]
    node_offsets: NDArray[np.int64]
    edge_offsets: NDArray[np.int64]
    kernel_grid: tuple[int, int]
    d_edge: int
    edge_index: NDArray[np.int64]
    node_layer: NDArray[np.int64]
    node_role: NDArray[np.int64]
    node_pos: NDArray[np.int64]
    node_type: NDArray[np.int64]
    edge_layer: NDArray[np.int64]
    edge_role: NDArray[np.int64]
    edge_type: NDArray[np.int64]
    edge_mask: NDArray[np.bool_]

    @property
    def n_nodes(self) -> int:
        """Number of nodes N."""
        return int(self.node_offsets[-1])

    @property
    def n_edges(self) -> int:
        """Number of edges E."""
        return int(self.edge_offsets[-1])

    def layer_edge_slots(self, layer_index: int) -> tuple[slice, slice] | slice:
        """Where layer `layer_index`'s (0-based) weights sit in the `(KH, KW)` grid or vector."""
        return _slots(self.spec, layer_index, self.kernel_grid)


def _slots(spec: NetworkSpec, i: int, grid: tuple[int, int]) -> tuple[slice, slice] | slice:
    layer = spec.layers[i]
    if isinstance(layer, ConvLayer):
        kh, kw = layer.kernel_size
    elif i == spec.n_conv and spec.pooling == "flatten" and i > 0:
        h, w = spec.flatten_hw  # type: ignore[misc]
        return slice(0, h * w)
    else:
        kh, kw = 1, 1
    oh, ow = (grid[0] - kh) // 2, (grid[1] - kw) // 2
    return (slice(oh, oh + kh), slice(ow, ow + kw))


@lru_cache(maxsize=256)
def _layout_cached(signature: str) -> GraphLayout:
    return _make_layout(NetworkSpec.model_validate_json(signature))


def layout(spec: NetworkSpec) -> GraphLayout:
    """The `GraphLayout` of `spec` (cached per architecture)."""
    return _layout_cached(spec.model_dump_json())


def _make_layout(spec: NetworkSpec) -> GraphLayout:
    widths = tuple(spec.widths)
    L = spec.n_layers
    node_offsets = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    counts = [widths[i + 1] * widths[i] for i in range(L)]
    edge_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    kh = max((lay.kernel_size[0] for lay in spec.layers if isinstance(lay, ConvLayer)), default=1)
    kw = max((lay.kernel_size[1] for lay in spec.layers if isinstance(lay, ConvLayer)), default=1)
    d_edge = max(kh * kw, *(spec.edge_vector_length(i) for i in range(L)))
    node_layer = np.repeat(np.arange(L + 1), widths).astype(np.int64)
    node_pos = np.concatenate([np.arange(w) for w in widths]).astype(np.int64)
    node_role = np.where(node_layer == 0, ROLE_INPUT, np.where(node_layer == L, ROLE_OUTPUT, ROLE_HIDDEN))
    n0 = widths[0]
    node_type = np.where(
        node_role == ROLE_INPUT,
        node_pos,
        np.where(node_role == ROLE_HIDDEN, n0 + node_layer - 1, n0 + L - 1 + node_pos),
    ).astype(np.int64)
    src, dst, elayer = [], [], []
    for lay in range(1, L + 1):
        n_in, n_out = widths[lay - 1], widths[lay]
        ii, jj = np.meshgrid(np.arange(n_out), np.arange(n_in), indexing="ij")
        src.append(node_offsets[lay - 1] + jj.ravel())
        dst.append(node_offsets[lay] + ii.ravel())
        elayer.append(np.full(n_out * n_in, lay))
    edge_index = np.stack([np.concatenate(src), np.concatenate(dst)]).astype(np.int64)
    edge_layer = np.concatenate(elayer).astype(np.int64)
    s_role, d_role = node_role[edge_index[0]], node_role[edge_index[1]]
    edge_role = np.where(
        s_role == ROLE_INPUT, ROLE_INPUT, np.where(d_role == ROLE_OUTPUT, ROLE_OUTPUT, ROLE_HIDDEN)
    ).astype(np.int64)
    edge_type = np.where(
        edge_role == ROLE_INPUT,
        node_pos[edge_index[0]],
        np.where(
            edge_role == ROLE_HIDDEN,
            n0 + edge_layer - 2,
            n0 + max(L - 2, 0) + node_pos[edge_index[1]],
        ),
    ).astype(np.int64)
    edge_mask = np.zeros((int(edge_offsets[-1]), d_edge), dtype=bool)
    grid = (kh, kw)
    for i in range(L):
        sl = slice(int(edge_offsets[i]), int(edge_offsets[i + 1]))
        m = np.zeros(d_edge, dtype=bool)
        slots = _slots(spec, i, grid)
        if isinstance(slots, slice):
            m[slots] = True
        else:
            g = np.zeros(grid, dtype=bool)
            g[slots] = True
            m[: kh * kw] = g.ravel()
        edge_mask[sl] = m
    for a in (node_offsets, edge_offsets, edge_index, node_layer, node_role, node_pos, node_type,
              edge_layer, edge_role, edge_type, edge_mask):
        a.setflags(write=False)
    return GraphLayout(
        spec=spec,
        widths=widths,
        node_offsets=node_offsets,
        edge_offsets=edge_offsets,
        kernel_grid=grid,
        d_edge=d_edge,
        edge_index=edge_index,
        node_layer=node_layer,
        node_role=node_role.astype(np.int64),
        node_pos=node_pos,
        node_type=node_type,
        edge_layer=edge_layer,
        edge_role=edge_role,
        edge_type=edge_type,
        edge_mask=edge_mask,
    )


@dataclass(frozen=True)
class Graph:
    """The graph of one network: features plus the architecture's index arrays.

    Attributes:
        node_features: `[N, 1]` biases (input nodes hold `input_node_value`).
        edge_features: `[E, d_e]` weights (see the module docstring for the layout).
        layout: the index arrays of the architecture (`edge_index`, `node_layer`, ...).
    """

    node_features: NDArray[np.floating]
    edge_features: NDArray[np.floating]
    layout: GraphLayout

    @property
    def spec(self) -> NetworkSpec:
        """The architecture."""
        return self.layout.spec

    @property
    def edge_index(self) -> NDArray[np.int64]:
        """`[2, E]` edges, source row 0, target row 1."""
        return self.layout.edge_index

    @property
    def backward_edge_index(self) -> NDArray[np.int64]:
        """`[2, E]` the same edges reversed (target -> source), for backward messages."""
        return self.layout.edge_index[::-1]

    @property
    def node_layer(self) -> NDArray[np.int64]:
        """`[N]` layer index of each node."""
        return self.layout.node_layer

    @property
    def node_type(self) -> NDArray[np.int64]:
        """`[N]` positional type of each node."""
        return self.layout.node_type

    @property
    def edge_type(self) -> NDArray[np.int64]:
        """`[E]` positional type of each edge."""
        return self.layout.edge_type

    @property
    def edge_mask(self) -> NDArray[np.bool_]:
        """`[E, d_e]` True where an edge vector holds a weight."""
        return self.layout.edge_mask

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return self.layout.n_nodes

    @property
    def n_edges(self) -> int:
        """Number of edges."""
        return self.layout.n_edges


def _encode(spec: NetworkSpec, lay: GraphLayout, weights: Sequence[NDArray], biases: Sequence[NDArray],
            input_node_value: float, lead: tuple[int, ...], dtype: np.dtype) -> tuple[NDArray, NDArray]:
    widths = lay.widths
    node = np.empty((*lead, lay.n_nodes, 1), dtype=dtype)
    node[..., : widths[0], 0] = input_node_value
    for i in range(spec.n_layers):
        node[..., lay.node_offsets[i + 1] : lay.node_offsets[i + 2], 0] = biases[i]
    edge = np.zeros((*lead, lay.n_edges, lay.d_edge), dtype=dtype)
    kh, kw = lay.kernel_grid
    for i, layer in enumerate(spec.layers):
        w = weights[i]
        n_out, n_in = widths[i + 1], widths[i]
        block = edge[..., lay.edge_offsets[i] : lay.edge_offsets[i + 1], :]
        block = block.reshape(*lead, n_out, n_in, lay.d_edge)
        slots = _slots(spec, i, lay.kernel_grid)
        if isinstance(slots, slice):  # flatten edge: (out, C*h*w) -> (out, C, h*w)
            block[..., slots] = w.reshape(*lead, n_out, n_in, -1)
        else:
            if not isinstance(layer, ConvLayer):
                w = w[..., None, None]
            grid = block[..., : kh * kw].reshape(*lead, n_out, n_in, kh, kw)
            grid[..., slots[0], slots[1]] = w
            block[..., : kh * kw] = grid.reshape(*lead, n_out, n_in, kh * kw)
        edge[..., lay.edge_offsets[i] : lay.edge_offsets[i + 1], :] = block.reshape(*lead, -1, lay.d_edge)
    return node, edge


def _decode(spec: NetworkSpec, lay: GraphLayout, node: NDArray, edge: NDArray,
            lead: tuple[int, ...]) -> tuple[list[NDArray], list[NDArray]]:
    widths = lay.widths
    kh, kw = lay.kernel_grid
    weights, biases = [], []
    for i, layer in enumerate(spec.layers):
        n_out, n_in = widths[i + 1], widths[i]
        b = node[..., lay.node_offsets[i + 1] : lay.node_offsets[i + 2], 0]
        block = edge[..., lay.edge_offsets[i] : lay.edge_offsets[i + 1], :].reshape(
            *lead, n_out, n_in, lay.d_edge
        )
        slots = _slots(spec, i, lay.kernel_grid)
        if isinstance(slots, slice):
            w = block[..., slots].reshape(*lead, n_out, -1)
        else:
            grid = block[..., : kh * kw].reshape(*lead, n_out, n_in, kh, kw)
            w = grid[..., slots[0], slots[1]]
            if not isinstance(layer, ConvLayer):
                w = w[..., 0, 0]
        weights.append(np.ascontiguousarray(w))
        biases.append(np.ascontiguousarray(b) if layer.bias else np.zeros_like(b))
    return weights, biases


def to_graph(network: Network, input_node_value: float = 0.0) -> Graph:
    """The graph of `network` (method section 2); exact and invertible by `from_graph`.

    Args:
        network: the network.
        input_node_value: feature of the input nodes, which have no bias.

    Returns:
        A `Graph` with `node_features [N, 1]`, `edge_features [E, d_e]`, `edge_index [2, E]`,
        `node_layer [N]` and the other index arrays of its `layout`.

    Example:
        ```python
        from scalegmn.weightgraph import NetworkSpec, random_network, to_graph

        g = to_graph(random_network(NetworkSpec.siren()))
        assert (g.n_nodes, g.n_edges) == (67, 1120)  # 2 + 32 + 32 + 1 neurons, 2*32 + 32*32 + 32 weights
        ```
    """
    if not isinstance(network, Network):
        raise TypeError(f"to_graph expects a Network, got {type(network).__name__}")
    lay = layout(network.spec)
    node, edge = _encode(network.spec, lay, network.weights, network.biases, input_node_value,
                         (), network.dtype)
    return Graph(node_features=node, edge_features=edge, layout=lay)


def from_graph(graph: Graph | tuple[NDArray, NDArray], spec: NetworkSpec | None = None) -> Network:
    """The exact `Network` whose graph is `graph` (bit-for-bit inverse of `to_graph`).

    Args:
        graph: a `Graph`, or a pair `(node_features [N, 1], edge_features [E, d_e])`, e.g. the
            output of an equivariant head.
        spec: the architecture (optional for a `Graph`, which knows its own).
    """
    if isinstance(graph, Graph):
        spec = spec or graph.spec
        node, edge = graph.node_features, graph.edge_features
    else:
        node, edge = (np.asarray(a) for a in graph)
    if spec is None:
        raise GraphError("from_graph needs the NetworkSpec to decode raw feature arrays")
    lay = layout(spec)
    node, edge = np.asarray(node), np.asarray(edge)
    if node.ndim == 1:
        node = node[:, None]
    if node.shape != (lay.n_nodes, 1):
        raise GraphError(
            f"node_features has shape {node.shape}; the spec's graph has ({lay.n_nodes}, 1)"
        )
    if edge.shape != (lay.n_edges, lay.d_edge):
        raise GraphError(
            f"edge_features has shape {edge.shape}; the spec's graph has ({lay.n_edges}, {lay.d_edge})"
        )
    w, b = _decode(spec, lay, node, edge, ())
    return Network(spec, w, b)


@dataclass(frozen=True)
class DenseBatch:
    """Graphs of B networks of one architecture, stacked (the fast path).

    Attributes:
        node_features: `[B, N, 1]`.
        edge_features: `[B, E, d_e]`.
        layout: the shared index arrays; `layer_edges` views layer l's edges as
            `[B, n_l, n_{l-1}, d_e]` (a reshape, no copy).
    """

    node_features: NDArray[np.floating]
    edge_features: NDArray[np.floating]
    layout: GraphLayout

    @property
    def spec(self) -> NetworkSpec:
        """The shared architecture."""
        return self.layout.spec

    def __len__(self) -> int:
        return int(self.node_features.shape[0])

    def layer_nodes(self, layer: int) -> NDArray:
        """Nodes of graph layer `layer` (0..L): `[B, n_layer, 1]`."""
        lo, hi = self.layout.node_offsets[layer], self.layout.node_offsets[layer + 1]
        return self.node_features[:, lo:hi]

    def layer_edges(self, layer: int) -> NDArray:
        """Edges of weight layer `layer` (1..L): `[B, n_layer, n_{layer-1}, d_e]`."""
        lo, hi = self.layout.edge_offsets[layer - 1], self.layout.edge_offsets[layer]
        w = self.layout.widths
        return self.edge_features[:, lo:hi].reshape(-1, w[layer], w[layer - 1], self.layout.d_edge)


def to_dense_batch(networks: Sequence[Network], input_node_value: float = 0.0) -> DenseBatch:
    """Stack the graphs of networks that share one architecture.

    Raises:
        GraphError: if the networks do not all have the same spec.
    """
    if not networks:
        raise GraphError("to_dense_batch needs at least one network")
    spec = networks[0].spec
    for k, n in enumerate(networks):
        if n.spec != spec:
            raise GraphError(
                f"network {k} has a different architecture from network 0; use to_graph_batch "
                "for mixed architectures"
            )
    lay = layout(spec)
    dtype = np.result_type(*(n.dtype for n in networks))
    ws = [np.stack([n.weights[i] for n in networks]) for i in range(spec.n_layers)]
    bs = [np.stack([n.biases[i] for n in networks]) for i in range(spec.n_layers)]
    node, edge = _encode(spec, lay, ws, bs, input_node_value, (len(networks),), dtype)
    return DenseBatch(node_features=node, edge_features=edge, layout=lay)


def from_dense_batch(batch: DenseBatch | tuple[NDArray, NDArray], spec: NetworkSpec | None = None) -> list[Network]:
    """Decode a dense batch (or `([B, N, 1], [B, E, d_e])` arrays) back to networks."""
    if isinstance(batch, DenseBatch):
        spec = spec or batch.spec
        node, edge = batch.node_features, batch.edge_features
    else:
        node, edge = (np.asarray(a) for a in batch)
    if spec is None:
        raise GraphError("from_dense_batch needs the NetworkSpec to decode raw feature arrays")
    lay = layout(spec)
    if node.ndim == 2:
        node = node[..., None]
    B = node.shape[0]
    if node.shape != (B, lay.n_nodes, 1) or edge.shape != (B, lay.n_edges, lay.d_edge):
        raise GraphError(
            f"batch arrays have shapes {node.shape} and {edge.shape}; the spec's graph needs "
            f"({B}, {lay.n_nodes}, 1) and ({B}, {lay.n_edges}, {lay.d_edge})"
        )
    ws, bs = _decode(spec, lay, node, edge, (B,))
    return [Network(spec, [w[k] for w in ws], [b[k] for b in bs]) for k in range(B)]


@dataclass(frozen=True)
class GraphBatch:
    """The disjoint union of graphs of any architectures (edge vectors padded to one `d_e`).

    Attributes:
        node_features: `[sum N, 1]`.
        edge_features: `[sum E, d_e]`.
        edge_index: `[2, sum E]` with node indices offset per graph.
        node_batch / edge_batch: graph id of each node / edge.
        node_layer, node_role, node_pos, node_type, edge_layer, edge_role, edge_type: as in
            `GraphLayout`, concatenated.
        n_layers_per_node: `[sum N]` L of the node's network (to tell output layers apart).
        edge_mask: `[sum E, d_e]`.
        node_ptr / edge_ptr: `[B + 1]` offsets of each graph.
        specs: the architecture of each graph.
    """

    node_features: NDArray[np.floating]
    edge_features: NDArray[np.floating]
    edge_index: NDArray[np.int64]
    node_batch: NDArray[np.int64]
    edge_batch: NDArray[np.int64]
    node_layer: NDArray[np.int64]
    node_role: NDArray[np.int64]
    node_pos: NDArray[np.int64]
    node_type: NDArray[np.int64]
    edge_layer: NDArray[np.int64]
    edge_role: NDArray[np.int64]
    edge_type: NDArray[np.int64]
    edge_mask: NDArray[np.bool_]
    n_layers_per_node: NDArray[np.int64]
    node_ptr: NDArray[np.int64]
    edge_ptr: NDArray[np.int64]
    specs: tuple[NetworkSpec, ...]

    def __len__(self) -> int:
        return len(self.specs)


def to_graph_batch(
    networks: Sequence[Network], input_node_value: float = 0.0, d_edge: int | None = None
) -> GraphBatch:
    """The disjoint union of the graphs of `networks` (architectures may differ).

    Args:
        networks: the networks.
        input_node_value: feature of input nodes.
        d_edge: pad every edge vector to this length (default: the largest needed).
    """
    if not networks:
        raise GraphError("to_graph_batch needs at least one network")
    graphs = [to_graph(n, input_node_value) for n in networks]
    need = max(g.layout.d_edge for g in graphs)
    d_e = need if d_edge is None else d_edge
    if d_e < need:
        raise GraphError(f"d_edge={d_edge} is smaller than the largest edge vector ({need})")
    dtype = np.result_type(*(n.dtype for n in networks))
    node_ptr = np.concatenate([[0], np.cumsum([g.n_nodes for g in graphs])]).astype(np.int64)
    edge_ptr = np.concatenate([[0], np.cumsum([g.n_edges for g in graphs])]).astype(np.int64)

    def pad(a: NDArray, fill: float | bool = 0) -> NDArray:
        out = np.full((a.shape[0], d_e), fill, dtype=a.dtype)
        out[:, : a.shape[1]] = a
        return out

    cat = np.concatenate
    return GraphBatch(
        node_features=cat([g.node_features for g in graphs]).astype(dtype, copy=False),
        edge_features=cat([pad(g.edge_features) for g in graphs]).astype(dtype, copy=False),
        edge_index=cat([g.edge_index + node_ptr[k] for k, g in enumerate(graphs)], axis=1),
        node_batch=np.repeat(np.arange(len(graphs)), [g.n_nodes for g in graphs]).astype(np.int64),
        edge_batch=np.repeat(np.arange(len(graphs)), [g.n_edges for g in graphs]).astype(np.int64),
        node_layer=cat([g.layout.node_layer for g in graphs]),
        node_role=cat([g.layout.node_role for g in graphs]),
        node_pos=cat([g.layout.node_pos for g in graphs]),
        node_type=cat([g.layout.node_type for g in graphs]),
        edge_layer=cat([g.layout.edge_layer for g in graphs]),
        edge_role=cat([g.layout.edge_role for g in graphs]),
        edge_type=cat([g.layout.edge_type for g in graphs]),
        edge_mask=cat([pad(g.layout.edge_mask, False) for g in graphs]),
        n_layers_per_node=np.repeat([g.spec.n_layers for g in graphs], [g.n_nodes for g in graphs]).astype(np.int64),
        node_ptr=node_ptr,
        edge_ptr=edge_ptr,
        specs=tuple(g.spec for g in graphs),
    )


def from_graph_batch(
    batch: GraphBatch, node_features: NDArray | None = None, edge_features: NDArray | None = None
) -> list[Network]:
    """Split a disjoint-union batch (or new features laid out like it) back into networks."""
    node = batch.node_features if node_features is None else node_features
    edge = batch.edge_features if edge_features is None else edge_features
    return split_graph_features(batch.specs, node, edge)


def split_graph_features(specs: Sequence[NetworkSpec], node_features: NDArray, edge_features: NDArray) -> list[Network]:
    """Decode features of a disjoint union of graphs of `specs` (in order) into networks.

    Args:
        specs: the architecture of each graph.
        node_features: `[sum N, 1]`.
        edge_features: `[sum E, d_e]` (edge vectors may be padded beyond each graph's own `d_e`).
    """
    node, edge = np.asarray(node_features), np.asarray(edge_features)
    out = []
    n0 = e0 = 0
    for spec in specs:
        lay = layout(spec)
        n1, e1 = n0 + lay.n_nodes, e0 + lay.n_edges
        out.append(from_graph((node[n0:n1], edge[e0:e1, : lay.d_edge]), spec))
        n0, e0 = n1, e1
    if (n0, e0) != (node.shape[0], edge.shape[0]):
        raise GraphError(
            f"features have {node.shape[0]} nodes / {edge.shape[0]} edges; the specs' graphs have {n0} / {e0}"
        )
    return out
