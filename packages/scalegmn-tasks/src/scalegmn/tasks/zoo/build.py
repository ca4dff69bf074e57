"""Running a zoo build: shard tasks in worker processes, progress, resume, finalisation.

A builder describes its zoo as a `Manifest` template and a list of `ShardTask`s, each
fully determined by the build options (so a shard computed twice is the same shard). The
runner skips shards that a previous run completed (the manifest lists them with their
checksums), runs the rest in `workers` processes (one thread each), records each shard in
the manifest as soon as its file is in place, and finally writes the columns file.
Under `torchrun` the processes share the pending shards and rank 0 alone writes the
manifest (see `run_build`).

Worker processes never outlive their build: SIGTERM and SIGINT of the build stop it (the
finished shards stay recorded) and terminate its workers; if the build process dies
without cleaning up (SIGKILL), each worker notices that its parent is gone (it polls
`os.getppid()`) and exits. A kill leaves at most hidden `.shard-*.tmp` files, which the
next `--resume` removes.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalegmn.weightgraph.io import sha256_file

from ..distributed import all_gather, barrier, on_rank0, process_group
from .manifest import Manifest, ShardRecord
from .store import SHARD_DIR, ZooError, finalize, read_manifest, write_manifest

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class ShardTask:
    """One shard to compute.

    Attributes:
        index: shard number.
        spec_index: index into the manifest's `specs`.
        start: id of its first network.
        count: number of networks.
        payload: builder-specific inputs (images, seeds, hyperparameters), picklable.
    """

    index: int
    spec_index: int
    start: int
    count: int
    payload: dict[str, Any] = field(default_factory=dict)


Worker = Callable[[str, ShardTask, dict[str, Any], ProgressFn], ShardRecord]
"""`worker(root, task, options, report) -> record`: computes and writes one shard,
calling `report(n)` after every `n` networks finished (for the progress bar)."""


@dataclass
class BuildStats:
    """What a build run did.

    Attributes:
        seconds: wall time of this run.
        networks_built: networks computed in this run (resumed shards excluded).
        shards_built: shards computed in this run.
        shards_skipped: shards a previous run had completed.
        first_result_seconds: when the first networks were reported done (process start-up
            and compilation happen before).
        reported_after_first: networks reported after that moment.
    """

    seconds: float = 0.0
    networks_built: int = 0
    shards_built: int = 0
    shards_skipped: int = 0
    first_result_seconds: float | None = None
    reported_after_first: int = 0

    @property
    def networks_per_second(self) -> float:
        """Throughput of this run."""
        return self.networks_built / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_networks_per_second(self) -> float:
        """Throughput after the first result, i.e. without start-up and compilation."""
        if self.first_result_seconds is None or self.seconds <= self.first_result_seconds:
            return 0.0
        return self.reported_after_first / (self.seconds - self.first_result_seconds)


_QUEUE: Any = None

PARENT_POLL_SECONDS = 0.5
"""How often a worker checks that the build process is still alive."""


def _exit_when_orphaned(parent: int) -> None:
    """Exit this worker as soon as its parent (the build process) is gone."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # no cleanup to run: a half-written shard is a temporary file the next resume removes


def _init_worker(q: Any, threads: int, parent: int) -> None:
    global _QUEUE
    _QUEUE = q
    # the build decides what Ctrl-C does (stop, record, terminate the workers)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # `parent` comes from the build itself: it may have died before this worker got here
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def _report_to_queue(n: int) -> None:
    if _QUEUE is not None:
        _QUEUE.put(n)


def _run_in_worker(worker: Worker, root: str, task: ShardTask, options: dict[str, Any]) -> ShardRecord:
    return worker(root, task, options, _report_to_queue)


def _check_resumable(root: Path, old: Manifest, new: Manifest) -> None:
    diffs = []
    for key in ("kind", "n_networks", "n_shards", "seed", "columns"):
        if getattr(old, key) != getattr(new, key):
            diffs.append(f"{key}: {getattr(old, key)!r} != {getattr(new, key)!r}")
    if [s.signature() for s in old.specs] != [s.signature() for s in new.specs]:
        diffs.append("specs differ")
    for k in sorted(set(old.build) | set(new.build)):
        if old.build.get(k) != new.build.get(k):
            diffs.append(f"build.{k}: {old.build.get(k)!r} != {new.build.get(k)!r}")
    if old.source != new.source:
        diffs.append("source differs")
    if diffs:
        raise ZooError(
            f"{root} holds a build with different options; resume needs the same options "
            f"({'; '.join(diffs[:6])}). Use a new output path to build a different zoo."
        )


def prepare(root: str | os.PathLike[str], template: Manifest, resume: bool) -> Manifest:
    """Create the zoo folder, or reopen an interrupted build of the same zoo.

    Raises:
        ZooError: if `root` holds a zoo and `resume` is False, or holds a different build.
    """
    root = Path(root)
    if (root / "manifest.json").exists():
        if not resume:
            raise ZooError(
                f"{root} already holds a zoo; pass resume=True (--resume) to continue its build "
                "or choose a new output path"
            )
        old = read_manifest(root)
        _check_resumable(root, old, template)
        good = []
        for rec in old.shards:
            path = root / rec.file
            if path.is_file() and sha256_file(path) == rec.sha256:
                good.append(rec)
        manifest = old.model_copy(update={"shards": good})
    else:
        if root.exists() and any(root.iterdir()):
            raise ZooError(f"{root} exists and is not empty (and has no manifest.json); choose a new path")
        root.mkdir(parents=True, exist_ok=True)
        manifest = template.model_copy(update={"shards": [], "complete": False})
    (root / SHARD_DIR).mkdir(exist_ok=True)
    for tmp in (root / SHARD_DIR).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    write_manifest(root, manifest)
    return manifest


def run_build(
    root: str | os.PathLike[str],
    template: Manifest,
    tasks: list[ShardTask],
    worker: Worker,
    options: dict[str, Any],
    workers: int = 1,
    resume: bool = False,
    progress: bool = True,
    on_shard: Callable[[ShardRecord], None] | None = None,
    description: str = "building zoo",
) -> tuple[Manifest, BuildStats]:
    """Build (or finish building) a zoo, in one process or in every process of torchrun.

    Under `torchrun` (`WORLD_SIZE > 1`; processes possibly on several machines sharing the
    file system) the process group is initialised (gloo) and the build is shared: rank 0
    prepares the folder (see `prepare`) while the others wait; the shards still to build
    are dealt out in turn (the i-th pending shard to rank `i % world_size`); each rank
    computes and writes its shard files (with its own `workers`); rank 0 alone writes the
    manifest, recording the shards every rank reports (every `SYNC_SECONDS`); rank 0 then
    writes the columns file, and every rank returns the same manifest and statistics.

    Args:
        root: output folder.
        template: the finished zoo's manifest without shards.
        tasks: every shard of the zoo.
        worker: computes and writes one shard (a module-level function: it is pickled).
        options: passed to every `worker` call.
        workers: processes (per torchrun process); 1 runs in this process.
        resume: continue an interrupted build of the same zoo in `root`.
        progress: show a progress bar (on rank 0 only under torchrun).
        on_shard: called after each shard is recorded (on rank 0 only under torchrun).
        description: progress bar label.

    Returns:
        The final manifest and this run's statistics (of every process under torchrun).

    Raises:
        ZooError: see `prepare`; a worker's error is re-raised after the finished shards are
            recorded, so a later `resume` keeps them. Under torchrun every process raises:
            the failing one its own error, the others the same error (preparation) or a
            `ZooError` naming the failed process.
    """
    root = Path(root)
    if template.n_shards != len(tasks):
        raise ValueError(f"template says {template.n_shards} shards but {len(tasks)} tasks were given")
    with _sigterm_as_exit(), process_group("gloo") as (rank, world):
        return _run_build(root, template, tasks, worker, options, workers, resume, progress, on_shard,
                          description, rank, world)


def _run_build(
    root: Path, template: Manifest, tasks: list[ShardTask], worker: Worker, options: dict[str, Any],
    workers: int, resume: bool, progress: bool, on_shard: Callable[[ShardRecord], None] | None,
    description: str, rank: int, world: int,
) -> tuple[Manifest, BuildStats]:
    manifest = on_rank0(lambda: prepare(root, template, resume), rank, world)
    done = manifest.completed()
    todo = [t for t in tasks if t.index not in done]
    stats = BuildStats(shards_skipped=len(done))
    t0 = time.perf_counter()
    total = sum(t.count for t in tasks)
    already = sum(t.count for t in tasks if t.index in done)

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not progress or rank != 0, transient=False,
    )

    def record(recs: list[ShardRecord]) -> None:
        nonlocal manifest
        if not recs:
            return
        manifest = manifest.model_copy(update={"shards": [*manifest.shards, *recs]})
        write_manifest(root, manifest)
        for rec in recs:
            stats.shards_built += 1
            stats.networks_built += rec.count
            if on_shard is not None:
                on_shard(rec)

    with bar:
        bar_id = bar.add_task(description, total=total, completed=already, rate="")
        built = 0

        def advance(n: int, own: bool = True) -> None:
            nonlocal built
            now = time.perf_counter() - t0
            if stats.first_result_seconds is None:
                if own:
                    stats.first_result_seconds = now
            else:
                stats.reported_after_first += n
            built += n
            rate = built / max(time.perf_counter() - t0, 1e-9)
            bar.update(bar_id, advance=n, rate=f"{rate:.1f}/s")

        if world > 1:
            outcome = _run_shared(root, todo, worker, options, workers, rank, world, record, advance)
        elif workers <= 1:
            for task in todo:
                record([worker(str(root), task, options, advance)])
        else:
            _run_parallel(root, todo, worker, options, workers, lambda r: record([r]), advance)
    if world > 1:
        return _finish_shared(root, manifest, stats, t0, workers, rank, world, outcome)
    stats.seconds = time.perf_counter() - t0
    manifest = manifest.model_copy(update={"history": [*manifest.history, _history_entry(stats, workers)]})
    manifest = finalize(root, manifest)
    return manifest, stats


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into `SystemExit(143)` during the build, so the cleanup that Ctrl-C gets runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _worker_pool(workers: int, q: Any, ctx: Any) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers are terminated if the build stops with an exception.

    On a normal exit the pool is shut down as usual (waiting for its workers). On an
    exception (a worker's error re-raised, Ctrl-C, SIGTERM) running shards are abandoned:
    the workers are terminated and reaped before the exception propagates.
    """
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(q, 1, os.getpid()))
    try:
        yield pool
    except BaseException:
        procs = list(getattr(pool, "_processes", {}).values())  # the pool has no public handle on them
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        raise
    pool.shutdown(wait=True)


def _history_entry(stats: BuildStats, workers: int) -> dict[str, Any]:
    return {
        "seconds": round(stats.seconds, 3), "networks_built": stats.networks_built,
        "shards_built": stats.shards_built, "shards_skipped": stats.shards_skipped,
        "workers": workers, "load_average_1min": _load(),
    }


SYNC_SECONDS = 2.0
"""Under torchrun, how often the processes send rank 0 the shards they finished."""


@dataclass
class _SharedOutcome:
    """How the shared part of a torchrun build ended, on one process."""

    error: BaseException | None = None  # this process's own error
    failed: list[tuple[int, str]] = field(default_factory=list)  # (rank, message) of every failure
    hosts: list[str] = field(default_factory=list)
    shards_by_rank: list[list[int]] = field(default_factory=list)  # filled on rank 0


def _run_shared(
    root: Path, todo: list[ShardTask], worker: Worker, options: dict[str, Any], workers: int,
    rank: int, world: int, record: Callable[[list[ShardRecord]], None],
    advance: Callable[[int, bool], None],
) -> _SharedOutcome:
    """This rank's share of the pending shards, computed in the background while the main
    thread exchanges, every `SYNC_SECONDS`, the finished records with the other ranks.

    Every rank makes the same number of `all_gather` calls: the loop ends when every rank
    reports it has nothing left running. Errors (a worker's, or rank 0's while recording)
    are exchanged the same way; every rank then stops taking new shards and waits for the
    running ones, which are still recorded.
    """
    mine = todo[rank::world]
    out = _SharedOutcome(shards_by_rank=[[] for _ in range(world)])
    pool: contextlib.AbstractContextManager[ThreadPoolExecutor | ProcessPoolExecutor]
    if workers <= 1:
        q: Any = queue_mod.Queue()
        pool = ThreadPoolExecutor(max_workers=1)
    else:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        pool = _worker_pool(workers, q, ctx)
    host = socket.gethostname()
    stopping = False

    def own(n: int) -> None:
        advance(n, True)

    with pool as executor:
        if workers <= 1:
            futures = [executor.submit(worker, str(root), t, options, q.put) for t in mine]
        else:
            futures = [executor.submit(_run_in_worker, worker, str(root), t, options) for t in mine]
        pending: set[Future] = set(futures)
        try:
            while True:
                new: list[ShardRecord] = []
                reported = 0
                deadline = time.monotonic() + SYNC_SECONDS
                while pending and not stopping and out.error is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    finished, pending = wait(pending, timeout=min(remaining, 0.2), return_when=FIRST_COMPLETED)
                    reported += _drain(q, own)
                    _collect(finished, new, out)
                if pending and (stopping or out.error is not None):
                    for fut in pending:
                        fut.cancel()  # those not started yet; the running ones finish and are recorded
                    finished = wait(pending).done
                    pending = set()
                    _collect(finished, new, out)
                reported += _drain(q, own)
                message = None if out.error is None else f"{type(out.error).__name__}: {out.error}"
                status = (new, reported, not pending, message, host)
                gathered = all_gather(status, world)
                out.hosts = [g[4] for g in gathered]
                for r, (_recs, _n, _idle, msg, _host) in enumerate(gathered):
                    if msg is not None and all(f[0] != r for f in out.failed):
                        out.failed.append((r, msg))
                if rank == 0:
                    for r, (recs, n, _idle, _msg, _host) in enumerate(gathered):
                        if r != 0:
                            advance(n, False)
                        out.shards_by_rank[r].extend(rec.index for rec in recs)
                    try:
                        record(sorted((rec for g in gathered for rec in g[0]), key=lambda rec: rec.index))
                    except Exception as e:
                        out.error = out.error or e
                stopping = bool(out.failed) or out.error is not None
                if all(g[2] for g in gathered):
                    break
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    if rank == 0 and out.error is not None and all(f[0] != 0 for f in out.failed):
        out.failed.append((0, f"{type(out.error).__name__}: {out.error}"))
    return out


def _collect(finished: set[Future], new: list[ShardRecord], out: _SharedOutcome) -> None:
    for fut in finished:
        if fut.cancelled():
            continue
        exc = fut.exception()
        if exc is not None:
            out.error = out.error or exc
        else:
            new.append(fut.result())


def _finish_shared(
    root: Path, manifest: Manifest, stats: BuildStats, t0: float, workers: int, rank: int, world: int,
    outcome: _SharedOutcome,
) -> tuple[Manifest, BuildStats]:
    """Rank 0 finalises (unless some rank failed) and every rank returns its result, or raises."""

    def final() -> tuple[Manifest, BuildStats]:
        if outcome.failed:
            if outcome.error is not None:
                raise outcome.error
            r, msg = outcome.failed[0]
            raise ZooError(f"zoo build failed in process {r} ({outcome.hosts[r]}): {msg}")
        stats.seconds = time.perf_counter() - t0
        entry = {
            **_history_entry(stats, workers), "processes": world,
            "ranks": [{"rank": r, "host": outcome.hosts[r], "shards": sorted(outcome.shards_by_rank[r])}
                      for r in range(world)],
        }
        done = manifest.model_copy(update={"history": [*manifest.history, entry]})
        return finalize(root, done), stats

    try:
        result = on_rank0(final, rank, world)
    except Exception:
        if outcome.error is not None:
            raise outcome.error from None
        raise
    barrier(world)
    return result


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _run_parallel(
    root: Path, todo: list[ShardTask], worker: Worker, options: dict[str, Any], workers: int,
    record: Callable[[ShardRecord], None], advance: ProgressFn,
) -> None:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    error: BaseException | None = None
    with _worker_pool(workers, q, ctx) as pool:
        pending: set[Future] = {pool.submit(_run_in_worker, worker, str(root), t, options) for t in todo}
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(q, advance)
                for fut in finished:
                    exc = fut.exception()
                    if exc is not None:
                        error = error or exc
                        continue
                    record(fut.result())
                if error is not None:
                    for fut in pending:
                        fut.cancel()
                    for fut in pending:
                        if not fut.cancelled():
                            try:
                                record(fut.result())
                            except BaseException:
                                pass
                    pending = set()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        _drain(q, advance)
    if error is not None:
        raise error


def _drain(q: Any, advance: ProgressFn) -> int:
    total = 0
    while True:
        try:
            n = q.get_nowait()
        except queue_mod.Empty:
            return total
        advance(n)
        total += n
