"""Processes started by `torchrun`: rank, world size, and work done once on rank 0.

Training and zoo building run unchanged under `torchrun --nproc-per-node N`. These helpers
read torchrun's environment, initialise the process group when `WORLD_SIZE > 1`, and let
one process (rank 0) do something whose outcome, a value or an error, every process then
shares, so that a failure on rank 0 stops every process instead of leaving them waiting.
Without torchrun (`WORLD_SIZE` unset or 1) nothing here imports `torch.distributed`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """`(rank, world_size)`; initialises the process group when run under torchrun.

    Args:
        backend: process group backend; None picks NCCL when CUDA is available, else gloo.
            Ignored if the group is already initialised.

    Returns:
        `(0, 1)` outside torchrun (no process group), else this process's rank and the
        number of processes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        if backend is None:
            import torch

            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


@contextmanager
def process_group(backend: str | None = None) -> Iterator[tuple[int, int]]:
    """`init_distributed` for the duration of a `with` block: a process group it created is
    destroyed at the end (a process leaving with a live gloo group can abort at exit); one
    that existed before is left alone.

    Yields:
        `(rank, world_size)`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if world > 1:
        import torch.distributed as dist

        created = not dist.is_initialized()
    try:
        yield init_distributed(backend)
    finally:
        if created:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def env_rank() -> int:
    """This process's rank from torchrun's environment (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def barrier(world: int) -> None:
    """Wait for every process (nothing to do when `world == 1`)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def all_gather(obj: Any, world: int) -> list[Any]:
    """Every process's `obj` (picklable), in rank order, on every process."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's `obj` (picklable) on every process; other ranks' `obj` is ignored."""
    if world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class RemoteError(RuntimeError):
    """Stands for an exception of another process that could not be sent as it is."""


def shareable(err: BaseException) -> BaseException:
    """`err` if it survives pickling (to send it to other processes), else a `RemoteError`
    with its type and message."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        return RemoteError(f"{type(err).__name__}: {err}")
    return err


def on_rank0(fn: Callable[[], T], rank: int, world: int) -> T:
    """Run `fn` on rank 0 only and return its result on every process.

    The other processes wait until rank 0 is done. If `fn` raises, every
    process raises it (rank 0 its own; the others a copy, see `shareable`), so no process
    is left waiting for the others.
    """
    if world <= 1:
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    if rank == 0:
        try:
            outcome = (True, fn())
        except BaseException as e:
            broadcast((False, shareable(e)), world)
            raise
    ok, value = broadcast(outcome, world)
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]
