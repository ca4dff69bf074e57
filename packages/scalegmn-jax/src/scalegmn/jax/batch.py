"""Batches of network graphs for the JAX model (a disjoint union with segment sums)."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import numpy as np
from jaxtyping import Array, Bool, Float, Int

import jax.numpy as jnp
from scalegmn.weightgraph import Network, activation_group, split_graph_features, to_graph_batch

GROUP_CODE = {"permutation": 0, "scale": 1, "sign": 2, "nonzero": 3}


class GraphBatch(eqx.Module):
    """The graphs of a list of networks as one disjoint union (any mix of architectures).

    Array fields are a pytree (they can be sharded over devices); `n_graphs` and `specs` are
    static. `node_group` holds each node's group as read from its network's activations
    (0 trivial, 1 scale, 2 sign, 3 nonzero; input/output nodes 0); the model applies its mode.
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


def collate(networks: Sequence[Network], dtype: jnp.dtype | None = None) -> GraphBatch:
    """Build a batch from networks (architectures may differ).

    Args:
        networks: the networks.
        dtype: float dtype of the features (default: the networks' dtype; float64 needs
            `jax_enable_x64`).
    """
    arrays, specs = graph_arrays(networks)
    dt = dtype or arrays["node_features"].dtype
    return GraphBatch(
        **{k: jnp.asarray(v, dtype=dt if v.dtype.kind == "f" else None) for k, v in arrays.items()},
        n_graphs=len(networks),
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
    group = np.zeros(len(gb.node_role), dtype=np.int64)
    hidden = np.nonzero(gb.node_role == 1)[0]
    for i in hidden:
        spec = gb.specs[gb.node_batch[i]]
        group[i] = GROUP_CODE[activation_group(spec.layers[gb.node_layer[i] - 1].activation)]
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
