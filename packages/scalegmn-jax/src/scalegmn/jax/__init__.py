"""scalegmn.jax: ScaleGMN and ScaleGMN-B in JAX and equinox (no torch needed).

Same config, same outputs and the same checkpoints as `scalegmn.torch`.
"""

from __future__ import annotations

from scalegmn.weightgraph import ScaleGMNConfig

from .batch import DenseGraphBatch, GraphBatch, collate
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .model import ScaleGMN, forward, init_params, param_shapes
from .parallel import DATA_AXIS, ShardedBatch, make_mesh, replicate, shard_batch
from .train import (
    TrainStep,
    init_optimizer,
    make_optimizer,
    make_train_step,
    warmup_constant,
    warmup_cosine,
)

__all__ = [
    "DATA_AXIS",
    "CheckpointError",
    "DenseGraphBatch",
    "GraphBatch",
    "ScaleGMN",
    "ScaleGMNConfig",
    "ShardedBatch",
    "TrainStep",
    "collate",
    "forward",
    "init_optimizer",
    "init_params",
    "load_checkpoint",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "param_shapes",
    "replicate",
    "save_checkpoint",
    "shard_batch",
    "warmup_constant",
    "warmup_cosine",
]
