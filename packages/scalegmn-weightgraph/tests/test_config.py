"""`ScaleGMNConfig.for_networks`: input sizes read from the data, clear errors otherwise."""

from __future__ import annotations

import pytest

from scalegmn.weightgraph import (
    ConvLayer,
    DenseLayer,
    NetworkSpec,
    ScaleGMNConfig,
    layout,
    random_network,
    to_graph,
)


def _flatten_cnn() -> NetworkSpec:
    return NetworkSpec(
        layers=[
            ConvLayer(in_channels=1, out_channels=2, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
            DenseLayer(in_features=2 * 4 * 4, out_features=3),
        ],
        input_shape=(1, 7, 7),
        pooling="flatten",
    )


SPECS = {
    "mlp": NetworkSpec.mlp([3, 5, 2]),
    "cnn": NetworkSpec.small_cnn(channels=3, n_conv=2, image_size=8, n_classes=4),
    "flatten": _flatten_cnn(),
}


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_sizes_come_from_the_graphs(kind: str) -> None:
    nets = [random_network(SPECS[kind], rng=k) for k in range(2)]
    cfg = ScaleGMNConfig.for_networks(nets, d_hidden=8, n_layers=2)
    g = to_graph(nets[0])
    assert cfg.d_node_in == g.node_features.shape[1]
    assert cfg.d_edge_in == g.edge_features.shape[1] == layout(SPECS[kind]).d_edge
    assert (cfg.d_hidden, cfg.n_layers) == (8, 2)
    for n in nets:
        cfg.check_compatible(n.spec)


def test_mixed_architectures_take_the_largest_edge_and_raise_the_tables() -> None:
    wide = NetworkSpec.mlp([20, 4, 3, 3, 18])
    nets = [random_network(SPECS["cnn"], rng=0), random_network(wide, rng=1), SPECS["flatten"]]
    cfg = ScaleGMNConfig.for_networks(nets)
    assert cfg.d_edge_in == max(layout(s).d_edge for s in (SPECS["cnn"], wide, SPECS["flatten"]))
    assert (cfg.max_in_nodes, cfg.max_out_nodes) == (20, 18)
    small = ScaleGMNConfig.for_networks([SPECS["mlp"]])
    assert small.max_in_nodes == ScaleGMNConfig().max_in_nodes  # never below the default


def test_options_override_and_are_checked() -> None:
    cfg = ScaleGMNConfig.for_networks([SPECS["mlp"]], d_edge_in=4, bidirectional=True)
    assert cfg.d_edge_in == 4 and cfg.bidirectional
    with pytest.raises(ValueError, match=r"network 0: .*d_edge_in=1; set d_edge_in=9"):
        ScaleGMNConfig.for_networks([SPECS["cnn"]], d_edge_in=1)


def test_empty_list_and_wrong_items_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one network"):
        ScaleGMNConfig.for_networks([])
    with pytest.raises(TypeError, match="item 1 is dict"):
        ScaleGMNConfig.for_networks([SPECS["mlp"], {"layers": []}])


def test_inconsistent_networks_are_named() -> None:
    relu, tanh = NetworkSpec.mlp([3, 5, 2], activation="relu"), NetworkSpec.mlp([3, 5, 2], activation="tanh")
    with pytest.raises(ValueError, match=r"network 1: symmetry='sign' .*relu"):
        ScaleGMNConfig.for_networks([tanh, relu], symmetry="sign")
    ScaleGMNConfig.for_networks([tanh, relu])  # "auto" takes each network's own group
    with pytest.raises(ValueError, match=r"last_layer.*\[2, 3\] output neurons"):
        ScaleGMNConfig.for_networks([relu, NetworkSpec.mlp([3, 5, 3])], readout="last_layer")
