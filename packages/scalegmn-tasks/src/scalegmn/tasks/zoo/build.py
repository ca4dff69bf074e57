"""Running a zoo build: shard tasks in worker processes, progress, resume, finalisation.

A builder describes its zoo as a `Manifest` template and a list of `ShardTask`s, each
fully determined by the build options (so a shard computed twice is the same shard). The
runner skips shards that a previous run completed (the manifest lists them with their
checksums), runs the rest in `workers` processes (one thread each), records each shard in
the manifest as soon as its file is in place, and finally writes the columns file.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .manifest import Manifest, ShardRecord
from .store import SHARD_DIR, ZooError, finalize, read_manifest, sha256_file, write_manifest

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


def _init_worker(q: Any, threads: int) -> None:
    global _QUEUE
    _QUEUE = q
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
    """Build (or finish building) a zoo.

    Args:
        root: output folder.
        template: the finished zoo's manifest without shards.
        tasks: every shard of the zoo.
        worker: computes and writes one shard (a module-level function: it is pickled).
        options: passed to every `worker` call.
        workers: processes; 1 runs in this process.
        resume: continue an interrupted build of the same zoo in `root`.
        progress: show a progress bar.
        on_shard: called in this process after each shard is recorded.
        description: progress bar label.

    Returns:
        The final manifest and this run's statistics.

    Raises:
        ZooError: see `prepare`; a worker's error is re-raised after the finished shards are
            recorded, so a later `resume` keeps them.
    """
    root = Path(root)
    if template.n_shards != len(tasks):
        raise ValueError(f"template says {template.n_shards} shards but {len(tasks)} tasks were given")
    manifest = prepare(root, template, resume)
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
        disable=not progress, transient=False,
    )

    def record(rec: ShardRecord) -> None:
        nonlocal manifest
        manifest = manifest.model_copy(update={"shards": [*manifest.shards, rec]})
        write_manifest(root, manifest)
        stats.shards_built += 1
        stats.networks_built += rec.count
        if on_shard is not None:
            on_shard(rec)

    with bar:
        bar_id = bar.add_task(description, total=total, completed=already, rate="")
        built = 0

        def advance(n: int) -> None:
            nonlocal built
            now = time.perf_counter() - t0
            if stats.first_result_seconds is None:
                stats.first_result_seconds = now
            else:
                stats.reported_after_first += n
            built += n
            rate = built / max(time.perf_counter() - t0, 1e-9)
            bar.update(bar_id, advance=n, rate=f"{rate:.1f}/s")

        if workers <= 1:
            for task in todo:
                record(worker(str(root), task, options, advance))
        else:
            _run_parallel(root, todo, worker, options, workers, record, advance)
    stats.seconds = time.perf_counter() - t0
    entry = {
        "seconds": round(stats.seconds, 3), "networks_built": stats.networks_built,
        "shards_built": stats.shards_built, "shards_skipped": stats.shards_skipped,
        "workers": workers, "load_average_1min": _load(),
    }
    manifest = manifest.model_copy(update={"history": [*manifest.history, entry]})
    manifest = finalize(root, manifest)
    return manifest, stats


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
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(q, 1)
    ) as pool:
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


def _drain(q: Any, advance: ProgressFn) -> None:
    while True:
        try:
            n = q.get_nowait()
        except queue_mod.Empty:
            return
        advance(n)
