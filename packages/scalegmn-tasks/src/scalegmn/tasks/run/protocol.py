"""The run protocol: the one epoch loop every task and backend trains with.

The paper's protocol: AdamW, linear warm-up then a constant learning rate, gradient
clipping, a numpy `default_rng(seed)` permutation of the train split per epoch, model
selection on the validation metric, the test metric at the best validation epoch.

What differs between tasks is a `Task` (`scalegmn.tasks.run.tasks`), between backends an
adapter (`scalegmn.tasks.run.backends`), between models a registry entry
(`scalegmn.tasks.run.models`). With an output folder (`scalegmn.tasks.run.folder`) the run
owns it (a lock taken before any check), writes `run.json`, one `metrics.jsonl` row and an
atomically replaced, checksummed `last.safetensors` per epoch, `best/` whenever validation
improves, and `result.json` and `curves.png` at the end; `resume=True` continues a killed
run exactly where its last completed epoch ended.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backends import get_backend
from .backends.base import ModelSetup
from .config import NonFiniteError, TrainError
from .folder import (
    BEST_DIR,
    CURVES_FILE,
    METRICS_FILE,
    STATE_FILE,
    RunFolder,
    append_rows,
    disk_errors,
    load_state,
    save_state,
)
from .tasks import Task


@dataclass(frozen=True)
class RunSpec:
    """What a run is, besides its task.

    Attributes:
        config: the run's config as JSON (`run.json`; a resume must match it).
        model: the model and optimiser settings.
        backend: `"torch"` or `"jax"`.
        tag: the `model` field of every metrics row (and the progress bar's label).
    """

    config: dict[str, Any]
    model: ModelSetup
    backend: str
    tag: str


def check_backend(name: str, device: str = "auto") -> None:
    """Refuse before any work when backend `name` cannot run here or `device` is not there.

    Raises:
        TrainError: naming what is missing and what to use instead.
    """
    backend_cls = get_backend(name)
    backend_cls.check_environment()
    backend_cls.check_device(device)


def run_protocol(
    spec: RunSpec,
    task: Task,
    out: str | Path | None = None,
    resume: bool = False,
    log_path: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train `task` as `spec` says; select on validation; report the test metric at the best epoch.

    Args:
        spec: the run.
        task: the task (data, loss, metric).
        out: the run folder; None keeps nothing on disk.
        resume: continue the run in `out` (its `run.json` must equal `spec.config`).
        log_path: also append per-epoch metrics rows to this JSONL file.
        progress: show a progress bar.
        on_epoch: called with each epoch's metrics row.

    Returns:
        `task`, `metric`, `best_epoch`, `val`/`test` (the metric at the best validation epoch,
        also as `val_<short>`/`test_<short>`), `seconds`, `history` (one row per epoch),
        `n_train`, `n_params_model`, and what the task adds.

    Raises:
        TrainError: before any training when the environment, folder, data or config do not
            fit; during training a `NonFiniteError` (naming epoch and step) when the loss or
            gradient stops being finite, the last good state left resumable.
    """
    loop = spec.model.loop
    check_backend(spec.backend, loop.device)
    backend_cls = get_backend(spec.backend)
    rank, world = backend_cls.processes(loop.threads)
    if world > 1 and loop.batch_size < world:
        raise TrainError(f"batch_size={loop.batch_size} is smaller than the {world} processes; "
                         f"every process needs at least one network per batch")
    folder = RunFolder(out, rank) if out is not None else None
    with folder.owned() if folder is not None else contextlib.nullcontext():
        has_state = folder.check_start(spec.config, resume) if folder is not None else False
        backend_cls.barrier(world)  # every process has checked the folder before the first write
        data = task.load()
        if folder is not None:
            folder.write_config(spec.config)
        backend = backend_cls(spec.model, task, data.n_params, rank, world,
                              total_steps=loop.total_steps(len(data.splits["train"][0])))
        return _train(spec, task, data, backend, folder, has_state, resume, log_path, progress, on_epoch)


def _train(spec: RunSpec, task: Task, data: Any, backend: Any, folder: RunFolder | None, has_state: bool,
           resume: bool, log_path: str | Path | None, progress: bool,
           on_epoch: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    from rich.progress import Progress

    loop = spec.model.loop
    rng = np.random.default_rng(loop.seed)
    nets, ys = data.splits["train"]
    val_nets, val_ys = data.splits["val"]
    test_nets, test_ys = data.splits["test"]
    steps_per_epoch = loop.steps_per_epoch(len(nets))
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val": task.worst(), "test": math.nan, "best_epoch": -1}
    start_epoch, seconds_before = 0, 0.0
    state_path = folder.path / STATE_FILE if folder is not None else None
    if has_state and state_path is not None:
        tensors, info = load_state(state_path)
        backend.load_state(tensors, info["backend"], state_path)
        rng.bit_generator.state = info["rng_numpy"]
        meta = info["meta"]
        history, best, start_epoch, seconds_before = meta["history"], meta["best"], meta["epoch"] + 1, meta["seconds"]
        if task.keeps_best_model and best["best_epoch"] >= 0 and folder is not None:
            backend.keep_best(folder.path / BEST_DIR)
    if folder is not None and resume:
        # a kill between the metrics append and the state write left rows the state does not hold
        folder.rewrite_metrics([{"model": spec.tag, **row} for row in history])
    logs = [Path(p) for p in (log_path, folder.path / METRICS_FILE if folder else None) if p is not None]
    writer = folder is None or folder.writer
    t0 = time.perf_counter() - seconds_before
    label = f"{spec.tag} ({backend.name})"
    with Progress(disable=not progress or not writer, transient=True) as bar:
        task_bar = bar.add_task(label, total=loop.epochs * steps_per_epoch,
                                completed=start_epoch * steps_per_epoch)
        for epoch in range(start_epoch, loop.epochs):
            backend.train_mode()
            order = rng.permutation(len(nets))
            losses = []
            for k in range(steps_per_epoch):
                idx = order[k * loop.batch_size:(k + 1) * loop.batch_size]
                if data.train_batch is not None:  # augmented: drawn from (seed, epoch, step), so resumes match
                    batch = data.train_batch(idx, np.random.default_rng([loop.seed, epoch, k]))
                else:
                    batch = [nets[i] for i in idx]
                try:
                    losses.append(backend.train_step(batch, ys[idx], epoch * steps_per_epoch + k))
                except NonFiniteError as err:
                    raise _stopped(f"epoch {epoch} step {k}: {err}", state_path, epoch) from None
                bar.advance(task_bar)
            if not backend.finite():
                raise _stopped(f"epoch {epoch} step {steps_per_epoch - 1}: the parameters are no longer finite "
                               f"(a non-finite gradient)", state_path, epoch)
            val = backend.evaluate("val", val_nets, val_ys)
            row = {"epoch": epoch, "loss": float(np.mean(losses)), f"val_{task.short}": val,
                   "seconds": time.perf_counter() - t0}
            if task.improves(val, best["val"]):
                best = {"val": val, "test": backend.evaluate("test", test_nets, test_ys), "best_epoch": epoch}
                if task.keeps_best_model:
                    backend.keep_best()
                if folder is not None and folder.writer:
                    with disk_errors(folder.path / BEST_DIR):
                        backend.save_best(folder.path / BEST_DIR)
            history.append(row)
            if writer:
                append_rows(logs, [{"model": spec.tag, **row}])
                if state_path is not None:
                    _write_state(state_path, backend, rng, {"epoch": epoch, "history": history, "best": best,
                                                            "seconds": row["seconds"]})
            if on_epoch:
                on_epoch(row)
    seconds = time.perf_counter() - t0
    if task.keeps_best_model:
        backend.restore_best()
    short = task.short
    result: dict[str, Any] = {
        "task": task.name, "metric": task.metric, "best_epoch": best["best_epoch"], "val": best["val"],
        "test": best["test"], f"val_{short}": best["val"], f"test_{short}": best["test"], "seconds": seconds,
        "history": history, "n_train": len(nets), "n_params_model": backend.n_params_model(),
    }
    result.update(task.finish(data, backend, folder))
    if task.keeps_best_model:
        result["model"] = backend.model
    if folder is not None and folder.writer:
        folder.write_result({k: v for k, v in result.items() if k != "model"})
        folder.write_png(CURVES_FILE, lambda p: task.plot_curves(history, p, spec.tag))
    return result


def _write_state(path: Path, backend: Any, rng: np.random.Generator, meta: dict[str, Any]) -> None:
    tensors, info = backend.state()
    save_state(path, tensors, {"meta": meta, "backend": info, "rng_numpy": rng.bit_generator.state})


def _stopped(what: str, state_path: Path | None, epoch: int) -> NonFiniteError:
    if state_path is None:
        where = "nothing was kept (no --out)"
    elif epoch == 0:
        where = "no epoch completed, so there is no state to resume"
    else:
        where = f"the last good state (epoch {epoch - 1}) is {state_path}, which --resume continues"
    return NonFiniteError(f"{what}; the run stopped and {where}; to avoid it, lower lr or grad_clip "
                          f"in a new run folder")
