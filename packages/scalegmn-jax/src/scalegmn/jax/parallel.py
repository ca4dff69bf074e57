"""Data-parallel training over devices with `jax.sharding`.

The networks are split into one sub-batch per device and the sub-batches are stacked on a
leading device axis that is sharded over a 1-D mesh (parameters and optimiser state are
replicated). Networks of one shape give dense sub-batches (`DenseGraphBatch`, the fast
path; when the batch does not divide evenly the last device is filled with copies of a
network that are masked out). Otherwise each sub-batch is a disjoint union, collated on its
own and padded to common sizes (a disjoint union's node and edge arrays depend on the
networks, so it cannot be cut into equal slices along its node axis). The training step maps the model over
that axis, adds the per-device sums of the per-example losses and divides by the global
number of networks: the loss and its gradient are those of one device holding the whole
batch (up to the order of floating-point additions).

Padding never reaches a real output: padded nodes belong to no graph (their graph index is
out of range, so segment sums drop them), padded edges join padded nodes, and padded
graphs (when the batch does not divide evenly) are masked out of the loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

import equinox as eqx
import numpy as np
from einops import rearrange
from jaxtyping import Array, Bool

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scalegmn.weightgraph import Network

from .batch import DenseGraphBatch, GraphBatch, collate, graph_arrays, same_shape

__all__ = ["DATA_AXIS", "ShardedBatch", "make_mesh", "replicate", "shard_batch"]

DATA_AXIS = "data"
"""Name of the mesh axis along which the networks are split."""

T = TypeVar("T")


class ShardedBatch(eqx.Module):
    """Networks split into equal-size padded sub-batches, one per device.

    Attributes:
        graphs: a `GraphBatch` or a `DenseGraphBatch` whose every array has a leading
            device axis `D` (e.g. node arrays `[D, N, ...]`); `n_graphs` is the number of
            graph slots per device.
        mask: `[D, n_graphs]` True for real networks, False for padding slots.
    """

    graphs: GraphBatch | DenseGraphBatch
    mask: Bool[Array, "D b"]

    @property
    def n_networks(self) -> int:
        """Number of real networks."""
        return int(np.asarray(self.mask).sum())


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default every device) with the axis `DATA_AXIS`."""
    devs = np.asarray(list(devices) if devices is not None else jax.devices())
    return Mesh(devs, (DATA_AXIS,))


def replicate(tree: T, mesh: Mesh) -> T:
    """Put every array of `tree` (a model, an optimiser state) on every device of `mesh`."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    arrays = jax.device_put(arrays, NamedSharding(mesh, PartitionSpec()))
    return eqx.combine(arrays, static)


def _pad_to(a: np.ndarray, n: int, fill: int | float | bool) -> np.ndarray:
    pad = [(0, n - a.shape[0])] + [(0, 0)] * (a.ndim - 1)
    return np.pad(a, pad, constant_values=fill)


def shard_batch(networks: Sequence[Network], labels: Array | np.ndarray, mesh: Mesh | None = None,
                *, dtype: jnp.dtype | None = None, dense: bool | None = None) -> tuple[ShardedBatch, Array]:
    """Split networks and labels over the devices of a 1-D mesh.

    Device `k` gets networks `k * b` to `(k + 1) * b - 1` with `b = ceil(B / D)`; every
    sub-batch has `b` graph slots (padding slots are masked out of the loss).

    Args:
        networks: `B` networks (architectures may differ).
        labels: `[B, ...]` one label (or target) per network.
        mesh: a 1-D mesh (default `make_mesh()`, every device).
        dtype: float dtype of the features (default: the networks' dtype).
        dense: the sub-batches' layout, as in `collate`: default dense when the networks
            have one shape, `False` padded disjoint unions, `True` dense or an error.

    Returns:
        The batch, for a step from `make_train_step`, and the labels `[D, b, ...]`, both
        sharded along the device axis.
    """
    mesh = mesh or make_mesh()
    if len(mesh.axis_names) != 1:
        raise ValueError(f"shard_batch needs a 1-D mesh, got axes {mesh.axis_names}")
    n_dev = mesh.devices.size
    networks = list(networks)
    labels = np.asarray(labels)
    if labels.shape[0] != len(networks):
        raise ValueError(f"{len(networks)} networks but {labels.shape[0]} labels")
    if len(networks) < n_dev:
        raise ValueError(f"{len(networks)} networks cannot fill {n_dev} devices: use a smaller mesh")
    b = -(-len(networks) // n_dev)
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    if dense or (dense is None and same_shape(networks)):
        return _shard_dense(networks, labels, n_dev, b, sharding, dtype)
    chunks = [graph_arrays(networks[k * b:(k + 1) * b]) for k in range(n_dev)]
    n_nodes = max(c["node_features"].shape[0] for c, _ in chunks) + 1  # at least one spare node
    n_edges = max(c["src"].shape[0] for c, _ in chunks)
    d_e = max(c["edge_features"].shape[1] for c, _ in chunks)
    fields: dict[str, list[np.ndarray]] = {k: [] for k in chunks[0][0]}
    mask, lab = [], []
    for k, (c, specs) in enumerate(chunks):
        m, spare = len(specs), n_nodes - 1
        node_fill = {"node_features": 0.0, "node_role": 1, "node_pos": 0, "node_layer": 1,
                     "node_group": 0, "node_batch": b}
        for name, fill in node_fill.items():
            fields[name].append(_pad_to(c[name], n_nodes, fill))
        edge_features = np.pad(c["edge_features"], ((0, 0), (0, d_e - c["edge_features"].shape[1])))
        edge_mask = np.pad(c["edge_mask"], ((0, 0), (0, d_e - c["edge_mask"].shape[1])))
        fields["edge_features"].append(_pad_to(edge_features, n_edges, 0.0))
        fields["edge_mask"].append(_pad_to(edge_mask, n_edges, False))
        fields["src"].append(_pad_to(c["src"], n_edges, spare))
        fields["dst"].append(_pad_to(c["dst"], n_edges, spare))
        fields["edge_layer"].append(_pad_to(c["edge_layer"], n_edges, 1))
        mask.append(np.arange(b) < m)
        lab.append(_pad_to(labels[k * b:(k + 1) * b], b, 0))
    dt = dtype or fields["node_features"][0].dtype

    def put(parts: list[np.ndarray]) -> Array:
        a = np.stack(parts)
        return jax.device_put(jnp.asarray(a, dtype=dt if a.dtype.kind == "f" else None), sharding)

    graphs = GraphBatch(**{k: put(v) for k, v in fields.items()}, n_graphs=b,
                        specs=tuple(s for _, specs in chunks for s in specs))
    return ShardedBatch(graphs=graphs, mask=put(mask)), put(lab)


def _shard_dense(networks: list[Network], labels: np.ndarray, n_dev: int, b: int, sharding: NamedSharding,
                 dtype: jnp.dtype | None) -> tuple[ShardedBatch, Array]:
    """Dense sub-batches of `b` networks stacked on a device axis (padding: copies of the
    first network, masked out)."""
    padded = networks + [networks[0]] * (n_dev * b - len(networks))
    subs = [collate(padded[k * b:(k + 1) * b], dtype, dense=True) for k in range(n_dev)]
    arrays = [eqx.partition(sub, eqx.is_array)[0] for sub in subs]
    _, static = eqx.partition(subs[0], eqx.is_array)
    stacked = jax.tree_util.tree_map(lambda *xs: jax.device_put(jnp.stack(xs), sharding), *arrays)
    graphs = dataclasses.replace(eqx.combine(stacked, static), specs=tuple(n.spec for n in networks))
    mask = rearrange(np.arange(n_dev * b) < len(networks), "(dev b) -> dev b", dev=n_dev)
    lab = np.concatenate([labels, np.zeros((n_dev * b - len(networks), *labels.shape[1:]), labels.dtype)])
    put = lambda a: jax.device_put(jnp.asarray(a), sharding)  # noqa: E731
    return ShardedBatch(graphs=graphs, mask=put(mask)), put(rearrange(lab, "(dev b) ... -> dev b ...", dev=n_dev))
