"""Batches of network graphs for the JAX model.

Two layouts, as in the torch backend:

* `DenseGraphBatch`: networks of one shape (same layer widths and kernel layout;
  activations may differ), stacked: node arrays `[B, N, ...]`, edge arrays `[B, E, ...]`.
  Messages are broadcasts and sums over the per-layer blocks `[B, n_l, n_{l-1}, ...]`.
* `GraphBatch`: the disjoint union of graphs of any architectures, aggregated with
  segment sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import numpy as np
from einops import rearrange
from jaxtyping import Array, Bool, Float, Int

import jax.numpy as jnp
from scalegmn.weightgraph import (
    GroupKind,
    Network,
    NetworkSpec,
    group_kind,
    layout,
    split_graph_features,
    to_graph_batch,
)


class GraphBatch(eqx.Module):
    """The graphs of a list of networks as one disjoint union (any mix of architectures).

    Array fields are a pytree (they can be sharded over devices); `n_graphs` and `specs` are
    static. `node_group` holds each node's group as read from its network's activations
    (a `scalegmn.weightgraph.GroupKind`; input/output nodes `PERMUTATION`); the model applies its mode.
    """

    node_features: Float[Array, "N 1"]
    edge_features: Float[Array, "E de"]
    src: Int[Array, " E"]
    dst: Int[Array, " E"]
    node_role: Int[Array, " N"]
    node_pos: Int[Array, " N"]
    node_layer: Int[Array, " N"]
    node_group: Int[Array, " N"]
    node_batch: Int[Array, " N"]
    edge_layer: Int[Array, " E"]
    edge_mask: Bool[Array, "E de"]
    n_graphs: int = eqx.field(static=True)
    specs: tuple = eqx.field(static=True)

    def to_networks(self, node_features: Array, edge_features: Array) -> list[Network]:
        """Decode features laid out like this batch (an equivariant head's output) to networks."""
        return split_graph_features(self.specs, np.asarray(node_features), np.asarray(edge_features))


class DenseGraphBatch(eqx.Module):
    """The graphs of `B` networks of one shape, stacked (the fast path).

    `node_features`, `edge_features` and `node_group` have a leading batch axis; the other
    index arrays describe the one shared graph (`src`, `dst` index its `N` nodes). Edges
    are in layer blocks, target-major inside a block, so block `l` (1..L) reshapes to
    `[B, n_l, n_{l-1}, ...]`.
    """

    node_features: Float[Array, "B N 1"]
    edge_features: Float[Array, "B E de"]
    node_group: Int[Array, "B N"]
    src: Int[Array, " E"]
    dst: Int[Array, " E"]
    node_role: Int[Array, " N"]
    node_pos: Int[Array, " N"]
    node_layer: Int[Array, " N"]
    edge_layer: Int[Array, " E"]
    edge_mask: Bool[Array, "E de"]
    widths: tuple[int, ...] = eqx.field(static=True)
    n_graphs: int = eqx.field(static=True)
    specs: tuple = eqx.field(static=True)

    def to_networks(self, node_features: Array, edge_features: Array) -> list[Network]:
        """Decode features laid out like this batch (an equivariant head's output) to networks."""
        node, edge = np.asarray(node_features), np.asarray(edge_features)
        return split_graph_features(self.specs, rearrange(node, "... d -> (...) d"),
                                    rearrange(edge, "... d -> (...) d"))


def _shape_key(spec: NetworkSpec) -> tuple:
    """What fixes the graph's arrays (not the activations): equal keys stack densely."""
    lay = layout(spec)
    return tuple(lay.widths), lay.d_edge, lay.edge_mask.tobytes()


def _one_shape(specs: Sequence[NetworkSpec]) -> bool:
    distinct = {s.model_dump_json(): s for s in specs}.values()
    return len({_shape_key(s) for s in distinct}) == 1


def same_shape(networks: Sequence[Network]) -> bool:
    """Whether the networks stack densely (equal layer widths and kernel layout)."""
    return _one_shape([n.spec for n in networks])


def collate(networks: Sequence[Network], dtype: jnp.dtype | None = None, *,
            dense: bool | None = None) -> GraphBatch | DenseGraphBatch:
    """Build a batch from networks (architectures may differ).

    Networks of one shape (equal layer widths and kernel layout; activations may differ)
    become a `DenseGraphBatch` (the fast path), others a `GraphBatch` disjoint union. Both
    give the same model outputs.

    Args:
        networks: the networks.
        dtype: float dtype of the features (default: the networks' dtype; float64 needs
            `jax_enable_x64`).
        dense: force the layout (`True` raises if the shapes differ; `False` always builds
            the disjoint union); default: dense when possible.

    Raises:
        TypeError: an item is not a `Network`.
        ValueError: no networks, or `dense=True` for networks of different shapes.
    """
    arrays, specs = graph_arrays(networks)
    dt = dtype or arrays["node_features"].dtype

    def put(v: np.ndarray) -> Array:
        return jnp.asarray(v, dtype=dt if v.dtype.kind == "f" else None)

    same = _one_shape(specs)
    if dense and not same:
        raise ValueError("dense=True needs networks of one shape (same widths and kernels); "
                         "these differ: use dense=None for a disjoint-union batch")
    if dense is False or not same:
        return GraphBatch(**{k: put(v) for k, v in arrays.items()}, n_graphs=len(networks), specs=specs)
    B = len(networks)
    lay = layout(specs[0])
    n, e = int(lay.node_offsets[-1]), int(lay.edge_offsets[-1])
    return DenseGraphBatch(
        node_features=put(rearrange(arrays["node_features"], "(b n) d -> b n d", b=B, n=n)),
        edge_features=put(rearrange(arrays["edge_features"], "(b e) d -> b e d", b=B, e=e)),
        node_group=put(rearrange(arrays["node_group"], "(b n) -> b n", b=B, n=n)),
        src=put(lay.edge_index[0]),
        dst=put(lay.edge_index[1]),
        node_role=put(lay.node_role),
        node_pos=put(lay.node_pos),
        node_layer=put(lay.node_layer),
        edge_layer=put(lay.edge_layer),
        edge_mask=put(lay.edge_mask),
        widths=tuple(int(w) for w in lay.widths),
        n_graphs=B,
        specs=specs,
    )


def graph_arrays(networks: Sequence[Network]) -> tuple[dict[str, np.ndarray], tuple]:
    """The array fields of `collate(networks)` as numpy arrays, and the specs."""
    if not networks:
        raise ValueError("collate needs at least one network")
    for k, n in enumerate(networks):
        if not isinstance(n, Network):
            raise TypeError(f"item {k} is a {type(n).__name__}, not a scalegmn Network")
    gb = to_graph_batch(networks)
    group = np.full(len(gb.node_role), GroupKind.PERMUTATION, dtype=np.int64)
    hidden = np.nonzero(gb.node_role == 1)[0]
    for i in hidden:
        spec = gb.specs[gb.node_batch[i]]
        group[i] = group_kind(spec.layers[gb.node_layer[i] - 1].activation)
    arrays = {
        "node_features": gb.node_features,
        "edge_features": gb.edge_features,
        "src": gb.edge_index[0],
        "dst": gb.edge_index[1],
        "node_role": gb.node_role,
        "node_pos": gb.node_pos,
        "node_layer": gb.node_layer,
        "node_group": group,
        "node_batch": gb.node_batch,
        "edge_layer": gb.edge_layer,
        "edge_mask": gb.edge_mask,
    }
    return {k: np.asarray(v) for k, v in arrays.items()}, tuple(gb.specs)
