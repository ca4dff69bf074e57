"""scalegmn.weightgraph: networks to graphs and back, exactly; the shared schemas.

Needs only numpy and pydantic. Converters for PyTorch and equinox import those
libraries only when called.
"""

from __future__ import annotations

from .activations import (
    ACTIVATIONS,
    Activation,
    ActivationEntry,
    GroupKind,
    activation_group,
    get_activation,
    group_kind,
)
from .convert.arrays import (
    LayoutRow,
    from_arrays,
    from_flat,
    from_state_dict,
    parse_layout_csv,
    small_cnn_zoo_layout,
    to_arrays,
    to_flat,
    to_state_dict,
)
from .errors import GraphError, NetworkError, UnsupportedLayerError
from .graph import (
    DenseBatch,
    Graph,
    GraphBatch,
    GraphLayout,
    from_dense_batch,
    from_graph,
    from_graph_batch,
    layout,
    split_graph_features,
    to_dense_batch,
    to_graph,
    to_graph_batch,
)
from .network import Network, apply_activation, forward
from .random import random_network
from .schemas import (
    ConvLayer,
    DenseLayer,
    NetworkSpec,
    ScaleGMNConfig,
)


def from_torch(module, input_shape=None, activation=None):  # type: ignore[no-untyped-def]
    """A `Network` from a PyTorch module, exactly (see `scalegmn.weightgraph.convert.torch.from_torch`)."""
    from .convert.torch import from_torch as _f

    return _f(module, input_shape, activation)


def to_torch(network):  # type: ignore[no-untyped-def]
    """An `nn.Sequential` computing the same function (see `scalegmn.weightgraph.convert.torch.to_torch`)."""
    from .convert.torch import to_torch as _f

    return _f(network)


def from_equinox(model, input_shape=None):  # type: ignore[no-untyped-def]
    """A `Network` from an equinox model, exactly (see `scalegmn.weightgraph.convert.equinox.from_equinox`)."""
    from .convert.equinox import from_equinox as _f

    return _f(model, input_shape)


def to_equinox(network, key=None):  # type: ignore[no-untyped-def]
    """An `eqx.nn.Sequential` computing the same function (see `scalegmn.weightgraph.convert.equinox.to_equinox`)."""
    from .convert.equinox import to_equinox as _f

    return _f(network, key)


__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ActivationEntry",
    "ConvLayer",
    "DenseBatch",
    "DenseLayer",
    "Graph",
    "GraphBatch",
    "GraphError",
    "GraphLayout",
    "GroupKind",
    "LayoutRow",
    "Network",
    "NetworkError",
    "NetworkSpec",
    "ScaleGMNConfig",
    "UnsupportedLayerError",
    "activation_group",
    "apply_activation",
    "forward",
    "from_arrays",
    "from_dense_batch",
    "from_equinox",
    "from_flat",
    "from_graph",
    "from_graph_batch",
    "from_state_dict",
    "from_torch",
    "get_activation",
    "group_kind",
    "layout",
    "parse_layout_csv",
    "random_network",
    "small_cnn_zoo_layout",
    "split_graph_features",
    "to_arrays",
    "to_dense_batch",
    "to_equinox",
    "to_flat",
    "to_graph",
    "to_graph_batch",
    "to_state_dict",
    "to_torch",
]
