"""Checkpoints shared with the torch backend: `config.json` + `model.safetensors` in a directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

import jax.numpy as jnp
from scalegmn.weightgraph.checkpoint import (
    CheckpointError,
    check_parameter_shapes,
    check_parameter_values,
    read_checkpoint_config,
    write_checkpoint_dir,
)

from .model import ScaleGMN, param_shapes

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]


def save_checkpoint(model: ScaleGMN, path: str | os.PathLike[str]) -> Path:
    """Write `model` to the directory `path` atomically (readable by `scalegmn.torch` too)."""
    if not isinstance(model, ScaleGMN):
        raise TypeError(f"save_checkpoint expects a ScaleGMN, got {type(model).__name__}")
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in model.params.items()}
    return write_checkpoint_dir(
        path, model.config, lambda f: save_file(arrays, str(f), metadata={"format": "scalegmn"})
    )


def load_checkpoint(path: str | os.PathLike[str]) -> ScaleGMN:
    """Rebuild a `ScaleGMN` from a checkpoint directory written by either backend.

    Raises:
        CheckpointError: missing files, a checksum mismatch, names/shapes that do not match the
            config, non-float or non-finite parameters.
    """
    config, w_file = read_checkpoint_config(path)
    try:
        arrays = load_file(str(w_file))
    except Exception as err:  # safetensors raises its own error type for a bad header
        raise CheckpointError(f"{w_file} is not a safetensors file: {err}") from None
    check_parameter_values({k: (str(v.dtype), v.dtype.kind == "f", bool(np.isfinite(v).all()) if v.dtype.kind == "f" else True)
                            for k, v in arrays.items()}, w_file)
    check_parameter_shapes({k: tuple(v.shape) for k, v in arrays.items()}, param_shapes(config), w_file)
    return ScaleGMN(config, params={k: jnp.asarray(v) for k, v in arrays.items()})
