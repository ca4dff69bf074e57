"""Checkpoints shared with the torch backend: `config.json` + `model.safetensors` in a directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from safetensors.numpy import load_file, save_file

import jax.numpy as jnp
from scalegmn.weightgraph import ScaleGMNConfig

from .model import ScaleGMN
from .params import as_numpy, param_shapes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or does not match its config."""


def save_checkpoint(model: ScaleGMN, path: str | os.PathLike[str]) -> Path:
    """Write `model` to the directory `path` atomically (readable by `scalegmn.torch` too)."""
    if not isinstance(model, ScaleGMN):
        raise TypeError(f"save_checkpoint expects a ScaleGMN, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(as_numpy(model.params), str(tmp / WEIGHTS_FILE), metadata={"format": "scalegmn"})
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


def load_checkpoint(path: str | os.PathLike[str]) -> ScaleGMN:
    """Rebuild a `ScaleGMN` from a checkpoint directory written by either backend.

    Raises:
        CheckpointError: missing files, or names/shapes that do not match the config.
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
        arrays = load_file(str(w_file))
    except Exception as err:  # safetensors raises its own error type for a bad header
        raise CheckpointError(f"{w_file} is not a safetensors file: {err}") from None
    shapes = param_shapes(config)
    missing, extra = sorted(set(shapes) - set(arrays)), sorted(set(arrays) - set(shapes))
    if missing or extra:
        raise CheckpointError(f"{w_file} does not match its config: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, s in shapes.items():
        if tuple(arrays[k].shape) != s:
            raise CheckpointError(f"{w_file}: {k} has shape {arrays[k].shape}, the config needs {s}")
    return ScaleGMN(config, params={k: jnp.asarray(v) for k, v in arrays.items()})
