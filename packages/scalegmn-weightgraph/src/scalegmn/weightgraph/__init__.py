"""scalegmn.weightgraph: networks to graphs and back, exactly; the shared schemas.

Needs only numpy and pydantic. Converters for PyTorch and equinox import those
libraries only when called.
"""

from __future__ import annotations

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
    to_dense_batch,
    to_graph,
    to_graph_batch,
)
from .network import Network, apply_activation, forward
from .random import random_network
from .schemas import (
    ACTIVATIONS,
    Activation,
    ConvLayer,
    DenseLayer,
    LayerSymmetry,
    NetworkSpec,
    ScaleGMNConfig,
    TrainConfig,
    ZooManifest,
    ZooShard,
    activation_group,
    layer_symmetries,
)

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ConvLayer",
    "DenseBatch",
    "DenseLayer",
    "Graph",
    "GraphBatch",
    "GraphError",
    "GraphLayout",
    "LayerSymmetry",
    "Network",
    "NetworkError",
    "NetworkSpec",
    "ScaleGMNConfig",
    "TrainConfig",
    "UnsupportedLayerError",
    "ZooManifest",
    "ZooShard",
    "activation_group",
    "apply_activation",
    "forward",
    "from_dense_batch",
    "from_graph",
    "from_graph_batch",
    "layer_symmetries",
    "layout",
    "random_network",
    "to_dense_batch",
    "to_graph",
    "to_graph_batch",
]
