"""The checkpoint directory both backends share: `config.json`, `model.safetensors`, `SHA256SUMS`.

The array I/O (safetensors for torch or numpy) stays in each backend; this module holds the
parts that must be identical: file names, the atomic write, the checksums, reading the
config, and checking the stored parameters (names, shapes, dtype, finiteness) against it.

`SHA256SUMS` holds the SHA-256 of the other two files in `sha256sum` format (so
`sha256sum -c SHA256SUMS` checks a checkpoint by hand); loading verifies it. A checkpoint
written before checksums existed has no `SHA256SUMS`: it is loaded with a warning (its
parameters are still checked), and saving it again adds one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from .io import sha256_file
from .schemas import ScaleGMNConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKSUM_FILE = "SHA256SUMS"


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
        sums = "".join(f"{sha256_file(tmp / name)}  {name}\n" for name in (CONFIG_FILE, WEIGHTS_FILE))
        (tmp / CHECKSUM_FILE).write_text(sums)
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
    """The config of a checkpoint directory and the path of its weights file, once verified.

    Raises:
        CheckpointError: a missing file, a checksum that does not match, or an invalid config.
    """
    path = Path(path)
    cfg_file, w_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    for f in (cfg_file, w_file):
        if not f.is_file():
            raise CheckpointError(f"{f} not found: a checkpoint directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    verify_checksums(path)
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


def verify_checksums(path: str | os.PathLike[str]) -> None:
    """Check the files of a checkpoint directory against its `SHA256SUMS`.

    A directory without `SHA256SUMS` (written before checksums) passes with a warning.

    Raises:
        CheckpointError: naming the file whose content changed, or a malformed `SHA256SUMS`.
    """
    path = Path(path)
    sums_file = path / CHECKSUM_FILE
    if not sums_file.is_file():
        warnings.warn(f"{path} has no {CHECKSUM_FILE} (written before checksums): its files are not verified; "
                      "save it again to add one", stacklevel=3)
        return
    expected: dict[str, str] = {}
    for line in sums_file.read_text(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise CheckpointError(f"{sums_file}: malformed line {line[:80]!r}; expected '<sha256>  <file>'")
        expected[name] = digest
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if name not in expected:
            raise CheckpointError(f"{sums_file} lists no checksum for {name}")
        if sha256_file(path / name) != expected[name]:
            raise CheckpointError(
                f"{path / name}: checksum mismatch (the file changed after it was written: corrupt or edited); "
                "restore or rewrite the checkpoint"
            )


def check_parameter_values(stored: Mapping[str, tuple[str, bool, bool]], w_file: Path) -> None:
    """Refuse parameters that are not floating point or not finite.

    Args:
        stored: per parameter name, `(dtype name, is floating point, every value finite)`.
        w_file: the weights file (for the message).

    Raises:
        CheckpointError: naming the first offending parameter.
    """
    for name in sorted(stored):
        dtype, is_float, finite = stored[name]
        if not is_float:
            raise CheckpointError(f"{w_file}: parameter {name} has dtype {dtype}; checkpoints hold floating-point parameters")
        if not finite:
            raise CheckpointError(f"{w_file}: parameter {name} holds NaN or infinite values; the model diverged before it was saved")
