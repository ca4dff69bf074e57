"""The action of group elements on parameters and on graphs (written once, used everywhere)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph import ConvLayer, Graph, Network, NetworkSpec, layout

from .groups import GroupElement


def _layer_maps(spec: NetworkSpec, g: GroupElement, i: int) -> tuple:
    """(perm_out, q_out, perm_in, q_in) for weight layer i (0-based); None where untouched."""
    L = spec.n_layers
    out = (g.perms[i], g.multipliers[i]) if i < L - 1 else (None, None)
    inn = (g.perms[i - 1], g.multipliers[i - 1]) if i >= 1 else (None, None)
    return (*out, *inn)


def _transform_block(w: NDArray, po, qo, pi, qi) -> NDArray:
    """Apply the action to a block `[n_out, n_in, ...]` (weights or graph edges)."""
    extra = (None,) * (w.ndim - 2)
    w = w.astype(np.result_type(w.dtype, np.float64 if w.dtype == np.float64 else w.dtype), copy=True)
    if qo is not None:
        w = w * qo.astype(w.dtype)[(slice(None), None, *extra)]
        w = w[po]
    if qi is not None:
        w = w / qi.astype(w.dtype)[(None, slice(None), *extra)]
        w = w[:, pi]
    return w


def _apply_phase(network: Network, g: GroupElement) -> Network:
    spec = network.spec
    ws = [np.array(w) for w in network.weights]
    bs = [np.array(b) for b in network.biases]
    assert g.phases is not None
    for i, k in enumerate(g.phases):
        if not np.any(k):
            continue
        layer = spec.layers[i]
        if layer.activation != "sine":
            raise ValueError(f"hidden layer {i + 1} is {layer.activation!r}: phase shifts need sine")
        bs[i] = bs[i] + (k * np.pi / layer.w0).astype(bs[i].dtype)
        flip = np.where(k % 2 == 1, -1.0, 1.0).astype(ws[i + 1].dtype)
        ws[i + 1] = _scale_inputs(spec, i + 1, ws[i + 1], flip)
    return Network(spec, ws, bs)


def _scale_inputs(spec: NetworkSpec, i: int, w: NDArray, factor: NDArray) -> NDArray:
    """Multiply the incoming weights of layer i from each previous neuron by `factor`."""
    blk = _as_block(spec, i, w)
    blk = blk * factor[(None, slice(None)) + (None,) * (blk.ndim - 2)]
    return blk.reshape(w.shape)


def _as_block(spec: NetworkSpec, i: int, w: NDArray) -> NDArray:
    """View weight i as `[n_out, n_in, ...]` (the flatten layer as `[out, C, h*w]`)."""
    layer = spec.layers[i]
    if not isinstance(layer, ConvLayer) and i == spec.n_conv and spec.pooling == "flatten" and i > 0:
        return w.reshape(w.shape[0], spec.layers[i - 1].n_out, -1)
    return w


def act(element: GroupElement, network: Network) -> Network:
    """Apply a group element to a network's parameters.

    `W_l' = P_l Q_l W_l Q_{l-1}^{-1} P_{l-1}^{-1}`, `b_l' = P_l Q_l b_l` for hidden layers;
    inputs and outputs are never permuted or scaled. Conv kernels are scaled whole, the
    dense layer after a flatten moves and scales each channel's `h*w` block. If the element
    has SIREN phases, they are applied first. When the element is in the network's group
    (`element.in_group(spec)`), the result computes the same function.

    Args:
        element: the group element.
        network: the network.

    Returns:
        The transformed network (same spec and dtype).
    """
    spec = network.spec
    element.check(spec)
    if element.phases is not None:
        network = _apply_phase(network, element)
    ws, bs = [], []
    for i, (w, b) in enumerate(zip(network.weights, network.biases, strict=True)):
        po, qo, pi, qi = _layer_maps(spec, element, i)
        blk = _transform_block(_as_block(spec, i, w), po, qo, pi, qi)
        ws.append(blk.reshape(w.shape).astype(w.dtype, copy=False))
        nb = b if qo is None else (b * qo.astype(b.dtype))[po]
        bs.append(np.asarray(nb, dtype=b.dtype))
    return Network(spec, ws, bs, check_finite=False)


def act_on_graph(
    element: GroupElement,
    graph: Graph | tuple[NDArray, NDArray],
    spec: NetworkSpec | None = None,
) -> Graph | tuple[NDArray, NDArray]:
    """Apply a group element in graph space.

    Node features of hidden node `i` are multiplied by `q_i`, edge features of `j -> i` by
    `q_i / q_j`, and the hidden nodes of each layer permuted; input and output nodes stay.
    Agrees with `act`: `to_graph(act(g, n))` equals `act_on_graph(g, to_graph(n))`.

    Args:
        element: the group element (no phase part).
        graph: a `Graph`, or `(node_features [N, d_v], edge_features [E, d_e])` laid out as
            `to_graph` lays out networks of `spec`.
        spec: the architecture (needed for raw arrays).

    Returns:
        The same kind of object as `graph`.
    """
    if element.phases is not None and any(np.any(k) for k in element.phases):
        raise ValueError("SIREN phase shifts act on biases additively; apply them with act on a Network")
    if isinstance(graph, Graph):
        spec = graph.spec
        node, edge = graph.node_features, graph.edge_features
    else:
        node, edge = (np.asarray(a) for a in graph)
        if spec is None:
            raise ValueError("act_on_graph needs spec= for raw feature arrays")
    element.check(spec)
    lay = layout(spec)
    if node.shape[0] != lay.n_nodes or edge.shape[0] != lay.n_edges:
        raise ValueError(
            f"features have {node.shape[0]} nodes / {edge.shape[0]} edges; the spec's graph has "
            f"{lay.n_nodes} / {lay.n_edges}"
        )
    node = np.array(node, copy=True)
    edge = np.array(edge, copy=True)
    L = spec.n_layers
    for h in range(1, L):
        p, q = element.perms[h - 1], element.multipliers[h - 1]
        lo, hi = lay.node_offsets[h], lay.node_offsets[h + 1]
        node[lo:hi] = (node[lo:hi] * q.astype(node.dtype)[:, None])[p]
    for i in range(L):
        po, qo, pi, qi = _layer_maps(spec, element, i)
        lo, hi = lay.edge_offsets[i], lay.edge_offsets[i + 1]
        blk = edge[lo:hi].reshape(lay.widths[i + 1], lay.widths[i], -1)
        edge[lo:hi] = _transform_block(blk, po, qo, pi, qi).reshape(hi - lo, -1).astype(edge.dtype, copy=False)
    if isinstance(graph, Graph):
        return Graph(node_features=node, edge_features=edge, layout=graph.layout)
    return node, edge
