"""scalegmn.torch: ScaleGMN and ScaleGMN-B in PyTorch (dense fast path and PyG-style batches).

Example:
    ```python
    from scalegmn.weightgraph import NetworkSpec, random_network
    from scalegmn.torch import ScaleGMN, ScaleGMNConfig, collate

    nets = [random_network(NetworkSpec.mlp([2, 8, 1]), rng=k) for k in range(4)]
    out = ScaleGMN(ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=3))(collate(nets))
    assert out.shape == (4, 3)
    ```
"""

from __future__ import annotations

from typing import Any

from scalegmn.weightgraph import ScaleGMNConfig

from .batch import (
    BatchError,
    DenseGraphs,
    Graphs,
    SparseGraphs,
    collate,
    from_pyg,
    to_networks,
    to_pyg_data,
)
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .model import ScaleGMN, compile_model


def __getattr__(name: str) -> Any:
    # PyTorch Geometric's import costs seconds: load the MessagePassing layer on first use.
    if name == "ScaleGMNConv":
        from .pyg import ScaleGMNConv

        return ScaleGMNConv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BatchError",
    "CheckpointError",
    "DenseGraphs",
    "Graphs",
    "ScaleGMN",
    "ScaleGMNConfig",
    "ScaleGMNConv",
    "SparseGraphs",
    "collate",
    "compile_model",
    "from_pyg",
    "load_checkpoint",
    "save_checkpoint",
    "to_networks",
    "to_pyg_data",
]
