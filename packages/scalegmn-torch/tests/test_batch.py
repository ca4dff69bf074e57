"""collate, the two batch layouts, and decoding back to networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_testutil import mixed_specs, nets, spec_for

from scalegmn.torch import BatchError, DenseGraphs, SparseGraphs, collate, to_networks
from scalegmn.weightgraph import GroupKind, NetworkSpec, to_graph


@pytest.mark.parametrize("kind", ["mlp", "cnn", "flatten"])
def test_dense_round_trip_is_exact(kind: str) -> None:
    ns = nets(spec_for(kind, "relu"), 3)
    b = collate(ns, torch.float64)
    assert isinstance(b, DenseGraphs) and len(b) == 3
    for a, c in zip(ns, to_networks(b), strict=True):
        assert a.equals(c)


def test_sparse_round_trip_is_exact() -> None:
    ns = [n for k, s in enumerate(mixed_specs()) for n in nets(s, 2, seed=k)]
    b = collate(ns, torch.float64)
    assert isinstance(b, SparseGraphs) and len(b) == len(ns)
    for a, c in zip(ns, b.to_networks(), strict=True):
        assert a.equals(c)


def test_dense_layer_views_match_the_graph() -> None:
    ns = nets(spec_for("mlp", "tanh"), 2)
    b = collate(ns, torch.float64)
    g = to_graph(ns[1])
    assert b.layer_edges(2).shape == (2, 4, 5, 1)
    lo, hi = g.layout.edge_offsets[1], g.layout.edge_offsets[2]
    np.testing.assert_array_equal(b.layer_edges(2)[1].reshape(-1, 1).numpy(), g.edge_features[lo:hi])
    np.testing.assert_array_equal(b.layer_nodes(1)[1, :, 0].numpy(), ns[1].biases[0])


def test_groups_are_read_from_activations() -> None:
    spec = NetworkSpec.mlp([2, 3, 3, 1], activation="relu")
    mixed = spec.model_copy(update={"layers": [spec.layers[0], spec.layers[1].model_copy(update={"activation": "tanh"}), spec.layers[2]]})
    b = collate(nets(spec, 1) + nets(mixed, 1), torch.float64)
    assert isinstance(b, DenseGraphs)
    # inputs trivial; layer 1 relu (scale) in both; layer 2 relu vs tanh; outputs trivial
    assert b.layer_codes == (GroupKind.PERMUTATION, GroupKind.SCALE, None, GroupKind.PERMUTATION)
    assert b.node_group[:, 5].tolist() == [GroupKind.SCALE, GroupKind.SIGN]


def test_hetero_dense_batch_keeps_each_spec() -> None:
    a = nets(NetworkSpec.mlp([3, 4, 2], activation="relu"), 2)
    t = nets(NetworkSpec.mlp([3, 4, 2], activation="tanh"), 2, seed=1)
    b = collate(a + t, torch.float64)
    assert isinstance(b, DenseGraphs)
    for x, y in zip(a + t, b.to_networks(), strict=True):
        assert x.equals(y)


def test_dense_false_forces_disjoint_union() -> None:
    b = collate(nets(spec_for("mlp", "relu"), 2), dense=False)
    assert isinstance(b, SparseGraphs)
    pyg = b.to_pyg()
    assert pyg.num_graphs == 2 and pyg.edge_index.shape[1] == b.edge_index.shape[1]


def test_default_dtype_and_move() -> None:
    b = collate(nets(spec_for("mlp", "relu"), 2))
    assert b.node_features.dtype == torch.get_default_dtype()
    c = b.to(dtype=torch.float64)
    assert c.edge_features.dtype == torch.float64 and c.edge_mask.dtype == torch.bool
    assert b.edge_features.dtype == torch.float32


def test_errors() -> None:
    with pytest.raises(BatchError, match="at least one"):
        collate([])
    with pytest.raises(TypeError, match="item 1"):
        collate([nets(spec_for("mlp", "relu"), 1)[0], "x"])  # type: ignore[list-item]
    with pytest.raises(BatchError, match="one shape"):
        collate([nets(s, 1)[0] for s in mixed_specs()[:2]], dense=True)
    with pytest.raises(TypeError, match="floating"):
        collate(nets(spec_for("mlp", "relu"), 1), torch.int64)
    with pytest.raises(TypeError, match="DenseGraphs"):
        to_networks("x")  # type: ignore[arg-type]
