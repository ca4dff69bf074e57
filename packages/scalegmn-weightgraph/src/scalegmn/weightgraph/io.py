"""Atomic file writes and checksums: the one helper every writer of the project uses.

A file is written to a uniquely named temporary file in the same folder (so two processes
never share a temporary name), flushed, synced and renamed over its final name with
`os.replace`; a reader therefore sees the old file or the new one, never half of one, and a
killed writer leaves at most a hidden `.NAME.*.tmp` file behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["TMP_SUFFIX", "atomic_write", "sha256_bytes", "sha256_file"]

TMP_SUFFIX = ".tmp"


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | str | Callable[[IO[bytes]], object] | Callable[[Path], object],
    *,
    to_path: bool = False,
) -> Path:
    """Write a file atomically.

    Args:
        path: the final file name; its folder is created if needed.
        data: the content: bytes, a str (written as UTF-8), or a callable that writes it.
            By default the callable receives an open binary file object; with
            `to_path=True` it receives the temporary file's path instead (for writers such
            as `safetensors.save_file` or `matplotlib.Figure.savefig` that open the file
            themselves; the path keeps the final file's suffix so they pick the format).
        to_path: pass the temporary path, not a file object, to a callable `data`.

    Returns:
        The final path.

    Example:
        ```python
        from scalegmn.weightgraph.io import atomic_write
        atomic_write("out/result.json", '{"acc": 0.9}')
        ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f"{TMP_SUFFIX}{path.suffix}"
    )
    tmp = Path(tmp_name)
    try:
        if callable(data) and to_path:
            os.close(fd)
            data(tmp)  # type: ignore[call-arg, arg-type]
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        else:
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, str):
                    f.write(data.encode("utf-8"))
                elif isinstance(data, bytes | bytearray | memoryview):
                    f.write(data)
                else:
                    data(f)  # type: ignore[arg-type]
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_bytes(data: bytes) -> str:
    """The SHA-256 hex digest of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
