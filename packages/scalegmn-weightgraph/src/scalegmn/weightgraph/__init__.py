"""scalegmn.weightgraph: networks to graphs and back, exactly; the shared schemas.

Needs only numpy and pydantic. Converters for PyTorch and equinox import those
libraries only when called.
"""

from __future__ import annotations

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
    "LayoutRow",
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
    "from_arrays",
    "from_dense_batch",
    "from_flat",
    "from_graph",
    "from_graph_batch",
    "from_state_dict",
    "layer_symmetries",
    "layout",
    "parse_layout_csv",
    "random_network",
    "small_cnn_zoo_layout",
    "to_arrays",
    "to_dense_batch",
    "to_flat",
    "to_graph",
    "to_graph_batch",
    "to_state_dict",
]
