"""The checkpoint directory both backends share: `config.json` + `model.safetensors`.

The array I/O (safetensors for torch or numpy) stays in each backend; this module holds the
parts that must be identical: file names, the atomic write, reading the config, and checking
the stored parameter names and shapes against the config.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from .schemas import ScaleGMNConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or does not match its config."""


def write_checkpoint_dir(
    path: str | os.PathLike[str], config: ScaleGMNConfig, write_weights: Callable[[Path], None]
) -> Path:
    """Write a checkpoint directory atomically (replacing an existing one).

    The files go to a temporary directory next to `path`, which is then renamed, so a reader
    never sees a half-written checkpoint.

    Args:
        path: the checkpoint directory.
        config: the model configuration, written as `config.json`.
        write_weights: writes the parameters to the file it is given (`model.safetensors`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write_weights(tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(config.to_json(indent=2))
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


def read_checkpoint_config(path: str | os.PathLike[str]) -> tuple[ScaleGMNConfig, Path]:
    """The config of a checkpoint directory and the path of its weights file.

    Raises:
        CheckpointError: a missing file or an invalid config.
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
    return config, w_file


def check_parameter_shapes(
    stored: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], w_file: Path
) -> None:
    """Refuse stored parameters whose names or shapes differ from what the config builds.

    Raises:
        CheckpointError: naming the missing, unexpected or mis-shaped parameters.
    """
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{w_file} does not match its config: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for k, shape in stored.items():
        if tuple(shape) != tuple(expected[k]):
            raise CheckpointError(
                f"{w_file}: parameter {k} has shape {tuple(shape)}, the config needs {tuple(expected[k])}"
            )
