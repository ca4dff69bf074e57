"""scalegmn.torch: ScaleGMN and ScaleGMN-B in PyTorch (dense fast path and PyG-style batches).

Example:
    >>> from scalegmn.weightgraph import NetworkSpec, random_network
    >>> from scalegmn.torch import ScaleGMN, ScaleGMNConfig, collate
    >>> nets = [random_network(NetworkSpec.mlp([2, 8, 1]), rng=k) for k in range(4)]
    >>> ScaleGMN(ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=3))(collate(nets)).shape
    torch.Size([4, 3])
"""

from __future__ import annotations

from scalegmn.weightgraph import ScaleGMNConfig

from .batch import BatchError, DenseGraphs, Graphs, SparseGraphs, collate, to_networks
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .model import ScaleGMN, compile_model

__all__ = [
    "BatchError",
    "CheckpointError",
    "DenseGraphs",
    "Graphs",
    "ScaleGMN",
    "ScaleGMNConfig",
    "SparseGraphs",
    "collate",
    "compile_model",
    "load_checkpoint",
    "save_checkpoint",
    "to_networks",
]
