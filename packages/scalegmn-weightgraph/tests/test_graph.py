"""The graph of a network: sizes, exact round trips, layout details, validation, schemas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wg_strategies import arch

from scalegmn.weightgraph import (
    ConvLayer,
    DenseLayer,
    Network,
    NetworkError,
    NetworkSpec,
    ScaleGMNConfig,
    from_dense_batch,
    from_graph,
    from_graph_batch,
    random_network,
    to_dense_batch,
    to_graph,
    to_graph_batch,
)


def test_sizes_of_the_papers_networks():
    g = to_graph(random_network(NetworkSpec.siren(), 0))
    assert (g.n_nodes, g.n_edges) == (2 + 32 + 32 + 1, 2 * 32 + 32 * 32 + 32 * 1) == (67, 1120)
    g = to_graph(random_network(NetworkSpec.small_cnn(), 0))
    assert (g.n_nodes, g.n_edges) == (1 + 16 + 16 + 16 + 10, 16 + 256 + 256 + 160) == (59, 688)
    assert g.edge_features.shape[1] == 9


@settings(max_examples=30, deadline=None)
@given(arch(), st.integers(0, 999), st.sampled_from([np.float32, np.float64]))
def test_round_trips_exact(spec, seed, dtype):
    nets = [random_network(spec, seed + k, dtype=dtype) for k in range(3)]
    assert from_graph(to_graph(nets[0])).equals(nets[0])
    assert all(a.equals(b) for a, b in zip(from_dense_batch(to_dense_batch(nets)), nets, strict=True))
    mixed = [nets[0], random_network(NetworkSpec.mlp([2, 3, 1], "tanh"), 0, dtype=dtype), nets[1]]
    assert all(a.equals(b) for a, b in zip(from_graph_batch(to_graph_batch(mixed)), mixed, strict=True))


def test_wrong_edge_order_is_detected():
    """Negative control: decoding with transposed edge blocks does not give the network back."""
    net = random_network(NetworkSpec.mlp([3, 4, 2]), 0)
    g = to_graph(net)
    e = g.edge_features.copy()
    e[:12] = e[:12].reshape(4, 3, 1).transpose(1, 0, 2).reshape(12, 1)
    assert not from_graph((g.node_features, e), net.spec).equals(net)


def test_conv_kernels_centred_and_flatten_edges():
    spec = NetworkSpec(layers=[ConvLayer(in_channels=1, out_channels=2, kernel_size=(5, 5), padding=(2, 2)),
                               ConvLayer(in_channels=2, out_channels=2, kernel_size=(3, 3), padding=(1, 1)),
                               DenseLayer(in_features=2 * 4 * 4, out_features=3)],
                       input_shape=(1, 4, 4), pooling="flatten")
    net = random_network(spec, 0)
    g = to_graph(net)
    assert g.edge_features.shape[1] == 25
    grid = g.edge_features[2:6, :25].reshape(4, 5, 5)  # layer-2 edges: 3x3 kernels in a 5x5 grid
    assert np.all(grid[:, 0] == 0) and np.all(grid[:, :, 4] == 0)
    np.testing.assert_array_equal(grid[0, 1:4, 1:4], net.weights[1][0, 0])
    flat_edges = g.edge_features[6:]
    np.testing.assert_array_equal(flat_edges[0, :16], net.weights[2][0, :16])  # channel 0 -> neuron 0
    assert g.edge_mask[6:, :16].all() and not g.edge_mask[6:, 16:].any()


def test_network_refuses_bad_parameters():
    spec = NetworkSpec.mlp([2, 3, 1])
    good = random_network(spec, 0)
    with pytest.raises(NetworkError, match="layer 0"):
        Network(spec, [np.zeros((3, 3)), good.weights[1]], good.biases)
    with pytest.raises(NetworkError, match="non-finite"):
        Network(spec, [np.full((3, 2), np.nan), good.weights[1]], good.biases)
    with pytest.raises(NetworkError, match="2 layers"):
        Network(spec, good.weights[:1], good.biases[:1])
    with pytest.raises(ValueError):
        good.weights[0][0, 0] = 1.0  # read-only


def test_schemas_json_round_trip_and_validation():
    spec = NetworkSpec.small_cnn("tanh")
    assert NetworkSpec.from_json(spec.to_json()) == spec
    assert "properties" in NetworkSpec.json_schema() and "d_hidden" in ScaleGMNConfig.json_schema()["properties"]
    cfg = ScaleGMNConfig(d_hidden=16, bidirectional=True)
    assert ScaleGMNConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="dropout"):
        ScaleGMNConfig(dropout=1.5)
    with pytest.raises(ValueError, match="extra"):
        ScaleGMNConfig(hidden=3)
    with pytest.raises(ValueError, match="d_edge_in=9"):
        ScaleGMNConfig().check_compatible(spec)
    with pytest.raises(ValueError, match="pooling"):
        NetworkSpec(layers=[ConvLayer(in_channels=1, out_channels=2, kernel_size=(3, 3)),
                            DenseLayer(in_features=2, out_features=1)], input_shape=(1, 5, 5))
