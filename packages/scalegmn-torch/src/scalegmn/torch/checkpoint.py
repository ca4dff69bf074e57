"""Checkpoints shared with the JAX backend: a directory with `config.json` and
`model.safetensors` (parameter names of `docs/model.md`, the torch `state_dict` keys)."""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import load_file, save_file

import torch
from scalegmn.weightgraph.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    check_parameter_shapes,
    check_parameter_values,
    read_checkpoint_config,
    write_checkpoint_dir,
)

from .model import ScaleGMN

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "CheckpointError", "load_checkpoint", "save_checkpoint"]


def save_checkpoint(model: ScaleGMN, path: str | os.PathLike[str]) -> Path:
    """Write `model` to the directory `path` atomically (replacing an existing checkpoint).

    The files are written into a temporary directory next to `path`, which is then renamed,
    so a reader never sees a half-written checkpoint.

    Args:
        model: the model.
        path: the checkpoint directory.

    Returns:
        The checkpoint path.

    Raises:
        TypeError: if `model` is not a `ScaleGMN`.
    """
    if not isinstance(model, ScaleGMN):
        raise TypeError(f"save_checkpoint expects a ScaleGMN, got {type(model).__name__}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return write_checkpoint_dir(
        path, model.config, lambda f: save_file(tensors, str(f), metadata={"format": "scalegmn"})
    )


def load_checkpoint(path: str | os.PathLike[str], device: torch.device | str | None = None) -> ScaleGMN:
    """Rebuild a `ScaleGMN` from a checkpoint directory (no pickled code is ever loaded).

    The model gets the dtype of the stored parameters (float32 or float64).

    Args:
        path: the directory written by `save_checkpoint` (either backend).
        device: where to put the parameters.

    Raises:
        CheckpointError: missing files, a checksum mismatch, parameter names/shapes that do not
            match the config, non-float or non-finite parameters.
    """
    config, w_file = read_checkpoint_config(path)
    try:
        tensors = load_file(str(w_file))
    except Exception as err:  # safetensors raises its own error type for any bad header
        raise CheckpointError(f"{w_file} is not a safetensors file: {err}") from None
    check_parameter_values({k: (str(v.dtype), v.is_floating_point(), bool(torch.isfinite(v).all()))
                            for k, v in tensors.items()}, w_file)
    model = ScaleGMN(config)
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    expected = model.state_dict()
    check_parameter_shapes({k: tuple(v.shape) for k, v in tensors.items()},
                           {k: tuple(v.shape) for k, v in expected.items()}, w_file)
    model.load_state_dict(tensors)
    return model.to(device) if device is not None else model
