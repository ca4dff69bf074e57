"""scalegmn.jax: ScaleGMN and ScaleGMN-B in JAX and equinox (no torch needed).

Same config, same outputs and the same checkpoints as `scalegmn.torch`.
"""

from __future__ import annotations

from scalegmn.weightgraph import ScaleGMNConfig

from .batch import GraphBatch, collate
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .model import ScaleGMN, forward
from .params import init_params, param_shapes
from .train import TrainStep, init_optimizer, make_optimizer, make_train_step, warmup_constant

__all__ = [
    "CheckpointError",
    "GraphBatch",
    "ScaleGMN",
    "ScaleGMNConfig",
    "TrainStep",
    "collate",
    "forward",
    "init_optimizer",
    "init_params",
    "load_checkpoint",
    "make_optimizer",
    "make_train_step",
    "param_shapes",
    "save_checkpoint",
    "warmup_constant",
]
