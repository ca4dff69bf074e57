"""The run folder: owned by one process, every file written atomically, the state checksummed.

| file | what |
|---|---|
| `run.json` | the config (a resume must pass the same one) |
| `metrics.jsonl` | one line per epoch (on resume cut back to the epochs the state holds) |
| `last.safetensors` | everything needed to continue, with a SHA-256 of its content in the metadata |
| `best/` | the model at the best validation epoch |
| `result.json`, `curves.png` | the final metrics and the training curves |
| `.lock` | who owns the folder (PID, host, start time) while a run is alive |
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from scalegmn.weightgraph.io import atomic_write, sha256_bytes

from .config import TrainError

RUN_FILE = "run.json"
STATE_FILE = "last.safetensors"
METRICS_FILE = "metrics.jsonl"
BEST_DIR = "best"
RESULT_FILE = "result.json"
CURVES_FILE = "curves.png"
LOCK_FILE = ".lock"



@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Turn a full disk (`ENOSPC`, `EDQUOT`) while writing `path` into one `TrainError` line."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TrainError(f"{path}: no space left on the device while writing it; free some space "
                             f"and continue with --resume") from None
        raise


def write_json(path: Path, obj: Any) -> None:
    """`obj` as indented JSON at `path`, atomically (full-disk errors as `TrainError`)."""
    with disk_errors(path):
        atomic_write(path, json.dumps(obj, indent=2, default=json_default))


def json_default(o: Any) -> Any:
    """JSON for numpy scalars (the rest is refused)."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """An exclusive `fcntl.flock` on `folder/.lock`, which records the owner's PID and start time.

    The kernel releases the lock when its process dies, however it dies; what a dead owner
    wrote stays in the file, so a new owner can say whose run it takes over.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None

    def acquire(self) -> None:
        """Take the lock or raise `TrainError` naming the process that holds it."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = self._read(fd)
            os.close(fd)
            who = (f"PID {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"
                   if owner else "another process")
            raise TrainError(f"{self.path.parent} is in use by another run ({who}); wait for it to end "
                             f"or choose another --out") from None
        previous = self._read(fd)
        if previous and previous.get("pid") != os.getpid():
            self.took_over = previous
            print(f"note: {self.path.parent}: taking over the lock of PID {previous.get('pid')} "
                  f"(started {previous.get('started')}), which is no longer running", file=sys.stderr)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            text = os.pread(fd, 4096, 0).decode()
            info = json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}
        if isinstance(info, dict) and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
            info["dead"] = True
        return info if isinstance(info, dict) else {}

    def release(self) -> None:
        """Empty the record and drop the lock (the file stays: unlinking a locked file races)."""
        import fcntl

        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class RunFolder:
    """The files of one run (see the module docstring); only rank 0 writes.

    Args:
        path: the folder.
        rank: this process's rank (torchrun); other ranks only read.
    """

    def __init__(self, path: str | os.PathLike[str], rank: int = 0) -> None:
        self.path = Path(path)
        self.rank = rank
        self.lock = FolderLock(self.path)
        self._created = False

    @property
    def writer(self) -> bool:
        """Whether this process writes the folder (rank 0)."""
        return self.rank == 0

    @contextmanager
    def owned(self) -> Iterator[RunFolder]:
        """Hold the folder's lock (rank 0) for the duration of the block, taken before any check.

        A folder this call created and nothing was written to is removed again on error.
        """
        if self.writer:
            self._created = not self.path.exists()
            with disk_errors(self.path):
                self.path.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        try:
            yield self
        except BaseException:
            self._release(cleanup=True)
            raise
        self._release(cleanup=False)

    def _release(self, cleanup: bool) -> None:
        if not self.writer:
            return
        self.lock.release()
        if cleanup and self._created and not (self.path / RUN_FILE).exists():
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:
                pass

    def check_start(self, config: dict[str, Any], resume: bool) -> bool:
        """Check the folder against the run; return whether there is a state to resume from.

        Raises:
            TrainError: the folder holds another run (without `resume`), a run of another
                config, or nothing to resume.
        """
        run_file = self.path / RUN_FILE
        if run_file.exists():
            try:
                old = json.loads(run_file.read_text())
            except ValueError:
                raise TrainError(f"{run_file} is not valid JSON; the folder's run cannot be continued: "
                                 f"choose a new --out") from None
            if not resume:
                raise TrainError(f"{self.path} already holds a run; pass --resume to continue it or choose a new folder")
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            if diff:
                raise TrainError(f"{self.path}: the config differs from the run being resumed in {diff}; "
                                 f"resume with the same config (see {run_file})")
            return (self.path / STATE_FILE).exists()
        others = [p for p in self.path.iterdir() if p.name != LOCK_FILE] if self.path.exists() else []
        if resume and others:
            raise TrainError(f"{self.path} holds no {RUN_FILE}: nothing to resume")
        return False

    def write_config(self, config: dict[str, Any]) -> None:
        """Write `run.json`."""
        if self.writer:
            write_json(self.path / RUN_FILE, config)

    def rewrite_metrics(self, rows: Sequence[dict[str, Any]]) -> None:
        """Replace `metrics.jsonl` by `rows`: the epochs the resumed state holds, each once."""
        if self.writer:
            path = self.path / METRICS_FILE
            with disk_errors(path):
                atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))

    def write_result(self, result: dict[str, Any]) -> None:
        """Write `result.json` (the JSON-serialisable entries of `result`)."""
        if self.writer:
            write_json(self.path / RESULT_FILE, result)

    def write_png(self, name: str, draw: Callable[[Path], object]) -> None:
        """Write a PNG atomically: `draw(tmp_path)` saves the figure to the path it is given."""
        if self.writer:
            with disk_errors(self.path / name):
                atomic_write(self.path / name, draw, to_path=True)


def append_rows(logs: Sequence[Path], rows: Sequence[dict[str, Any]]) -> None:
    """Append metrics rows to each JSONL log (one `write` per log; full disk as `TrainError`)."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    for p in logs:
        with disk_errors(p), p.open("a") as fh:
            fh.write(text)


# -- the resumable state -----------------------------------------------------------------


def _digest(tensors: dict[str, np.ndarray], info: str) -> str:
    parts = [info.encode()]
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        parts += [name.encode(), str(a.dtype).encode(), str(a.shape).encode(), a.tobytes()]
    return sha256_bytes(b"\0".join(parts))


def save_state(path: Path, tensors: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """Write the resumable state: arrays plus JSON `info`, with their SHA-256, atomically.

    Args:
        path: the `last.safetensors` file.
        tensors: named numpy arrays (model, optimiser, random states).
        info: JSON-serialisable progress and settings.
    """
    from safetensors.numpy import save

    text = json.dumps(info, default=json_default)
    arrays = {k: np.array(v, copy=True) for k, v in tensors.items()}  # keeps 0-d arrays 0-d
    blob = save(arrays, metadata={"state": text, "sha256": _digest(arrays, text)})
    with disk_errors(path):
        atomic_write(path, blob)


def load_state(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a state written by `save_state`.

    Returns:
        `(tensors, info)`.

    Raises:
        TrainError: one line naming the file when it cannot be parsed, its checksum does not
            match, or an array holds NaN/infinity or a dtype a state never has.
    """
    from safetensors import safe_open

    fix = "delete it to restart from epoch 0 with --resume, or start a new run in another --out"
    try:
        with safe_open(str(path), "np") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        text = metadata["state"]
        info = json.loads(text)
    except Exception as err:  # a damaged header raises anything from the parser
        raise TrainError(f"{path}: the run state is corrupt or not a run state ({type(err).__name__}: "
                         f"{str(err)[:120]}); {fix}") from None
    digest = metadata.get("sha256")
    if digest is None:
        raise TrainError(f"{path}: the run state carries no checksum (written by an older version), so it "
                         f"cannot be verified; {fix}")
    if _digest(tensors, text) != digest:
        raise TrainError(f"{path}: the run state's checksum does not match its content (the file is "
                         f"damaged); {fix}")
    for k, v in tensors.items():
        if v.dtype.kind not in "fiub":
            raise TrainError(f"{path}: array {k!r} has dtype {v.dtype}, which a run state never holds; {fix}")
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise TrainError(f"{path}: array {k!r} holds NaN or infinite values; {fix}")
    return tensors, info
