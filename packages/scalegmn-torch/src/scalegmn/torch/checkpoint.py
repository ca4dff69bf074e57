"""Checkpoints shared with the JAX backend: a directory with `config.json` and
`model.safetensors` (parameter names of `docs/model.md`, the torch `state_dict` keys)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

import torch
from scalegmn.weightgraph import ScaleGMNConfig

from .model import ScaleGMN

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or does not match its config."""


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "scalegmn"})
        (tmp / CONFIG_FILE).write_text(model.config.to_json(indent=2))
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "ckpt")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_checkpoint(path: str | os.PathLike[str], device: torch.device | str | None = None) -> ScaleGMN:
    """Rebuild a `ScaleGMN` from a checkpoint directory (no pickled code is ever loaded).

    The model gets the dtype of the stored parameters (float32 or float64).

    Args:
        path: the directory written by `save_checkpoint` (either backend).
        device: where to put the parameters.

    Raises:
        CheckpointError: missing files, or parameter names/shapes that do not match the config.
    """
    path = Path(path)
    cfg_file, w_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise CheckpointError(f"{f} not found: a checkpoint directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        config = ScaleGMNConfig.from_json(cfg_file.read_text())
    except ValueError as err:
        raise CheckpointError(f"{cfg_file}: invalid config: {err}") from None
    try:
        tensors = load_file(str(w_file))
    except Exception as err:  # safetensors raises its own error type for any bad header
        raise CheckpointError(f"{w_file} is not a safetensors file: {err}") from None
    model = ScaleGMN(config)
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{w_file} does not match its config: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"{w_file}: parameter {k} has shape {tuple(v.shape)}, the config needs "
                f"{tuple(expected[k].shape)}"
            )
    model.load_state_dict(tensors)
    return model.to(device) if device is not None else model
