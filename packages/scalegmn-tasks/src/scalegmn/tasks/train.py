"""Training and evaluation of metanetworks on zoos: the entry points of the zoo tasks.

The loop itself is the run protocol (`scalegmn.tasks.run.protocol`), shared with INR
editing and both backends; this module turns a `RunConfig` into a run of it. The task
follows the zoo's target: class labels train with cross-entropy and report accuracy
(`ClassificationTask`); real targets train `MSE(sigmoid(f(G)), y)` and report Kendall's tau
(`GeneralisationTask`, generalisation prediction).

A run with an output folder writes `run.json`, `metrics.jsonl`, `last.safetensors`,
`best/`, `result.json` and `curves.png` (see `scalegmn.tasks.run.folder`); `resume=True`
continues a killed run exactly where its last completed epoch ended. Under
`torchrun --nproc-per-node N` the torch backend trains data parallel; `backend="jax"`
trains with `scalegmn.jax`, data parallel over the JAX devices.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scalegmn.weightgraph import Network, ScaleGMNConfig

from .run.backends import get_backend
from .run.backends.base import ModelSetup
from .run.config import LoopConfig, ModelKindName, RunConfig, TrainError, load_run_config
from .run.folder import BEST_DIR, METRICS_FILE, RUN_FILE, STATE_FILE
from .run.models import get_model_kind
from .run.protocol import RunSpec, check_backend, run_protocol
from .run.tasks import kendall_tau, layer_scales, scale_layers, zoo_task

__all__ = [
    "BEST_DIR",
    "METRICS_FILE",
    "RUN_FILE",
    "STATE_FILE",
    "LoopConfig",
    "RunConfig",
    "TrainError",
    "build_model",
    "evaluate_run",
    "kendall_tau",
    "layer_scales",
    "load_run_config",
    "model_gmn_config",
    "model_setup",
    "prepare_inputs",
    "prepare_run_data",
    "scale_layers",
    "score",
    "train_run",
]


def model_setup(cfg: RunConfig) -> ModelSetup:
    """The model of a run: its kind from the registry and the configuration it trains with."""
    kind = get_model_kind(cfg.model)
    return ModelSetup(kind=kind, gmn=kind.gmn_config(cfg.gmn), mlp_hidden=cfg.mlp_hidden, loop=cfg)


def model_gmn_config(cfg: RunConfig) -> ScaleGMNConfig:
    """The ScaleGMN configuration of a run: `cfg.gmn`, permutation-only for the GMN baselines."""
    return model_setup(cfg).gmn


def prepare_inputs(kind: ModelKindName, networks: Sequence[Network]) -> list[Network]:
    """The input transformation of a model kind (none for ScaleGMN and the MLP)."""
    return get_model_kind(kind).prepare(networks)


def prepare_run_data(cfg: RunConfig) -> tuple[dict[str, tuple[list[Network], np.ndarray]], str]:
    """The three splits as the model sees them (scaled, baseline-transformed) and the task's name.

    Raises:
        TrainError: the zoo cannot be opened, its targets are not `cfg.task`'s, or it does
            not fit the model.
    """
    task = zoo_task(cfg)
    return task.load().splits, task.name


def build_model(cfg: RunConfig, n_params: int) -> Any:
    """The torch module for `cfg.model` (seeded by `cfg.seed`)."""
    from .run.backends.torch import build_model as build

    return build(model_setup(cfg), n_params)


def _eval_batches(cfg: RunConfig, nets: Sequence[Network], ys: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """A split as torch batches of 256 with their targets."""
    from .run.backends.torch import EVAL_BATCH, FAMILIES

    batch = FAMILIES[get_model_kind(cfg.model).family].batch
    return [(batch(nets[i:i + EVAL_BATCH]), ys[i:i + EVAL_BATCH]) for i in range(0, len(nets), EVAL_BATCH)]


def score(model: Any, batches: Sequence[tuple[Any, np.ndarray]], classify: bool) -> float:
    """Accuracy (classification) or Kendall's tau of `sigmoid(f(G))` (regression) of a torch model."""
    from .run.backends.torch import score as torch_score

    return torch_score(model, batches, classify)


def train_run(
    cfg: RunConfig,
    out: str | Path | None = None,
    resume: bool = False,
    log_path: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train on the train split of the run's data, select on val, report test at the best val epoch.

    Args:
        cfg: the run.
        out: the run folder (config, metrics, resumable state, best model); None keeps
            nothing on disk.
        resume: continue the run in `out` (its config must equal `cfg`).
        log_path: also append per-epoch metrics to this JSONL file.
        progress: show a progress bar.
        on_epoch: called with each epoch's metrics row.

    Returns:
        A dict with `task`, `metric` (`"accuracy"` or `"kendall_tau"`), `best_epoch`,
        `val`/`test` (the metric at the best val epoch; also as `val_acc`/`test_acc` or
        `val_tau`/`test_tau`), `seconds`, and the per-epoch `history`.

    Raises:
        TrainError: before any training, when the zoo, the config, the folder or the resume
            do not fit (for `backend="jax"` also: jax is not installed, or the call runs
            under torchrun); a `NonFiniteError` when the loss or gradient stops being finite.
    """
    check_backend(cfg.backend, cfg.device)
    task = zoo_task(cfg)
    spec = RunSpec(config=json.loads(cfg.model_dump_json()), model=model_setup(cfg), backend=cfg.backend,
                   tag=cfg.model)
    return run_protocol(spec, task, out=out, resume=resume, log_path=log_path, progress=progress,
                        on_epoch=on_epoch)


def evaluate_run(run: str | Path, split: str = "test") -> tuple[float, str]:
    """The metric of a run's best model (`run/best`) on one split of its data (with the run's backend).

    Returns:
        `(value, metric name)`: accuracy or Kendall's tau.

    Raises:
        TrainError: not a finished run folder, an unknown split, or a zoo that no longer fits.
    """
    run = Path(run)
    if not (run / RUN_FILE).is_file() or not (run / BEST_DIR).is_dir():
        raise TrainError(f"{run}: not a finished run folder (needs {RUN_FILE} and {BEST_DIR}/)")
    if split not in ("train", "val", "test"):
        raise TrainError(f"unknown split {split!r}; use train, val or test")
    try:
        cfg = RunConfig.model_validate_json((run / RUN_FILE).read_text())
    except ValueError as err:
        raise TrainError(f"{run / RUN_FILE}: not a valid run config: {str(err)[:300]}") from None
    check_backend(cfg.backend, cfg.device)
    backend_cls = get_backend(cfg.backend)
    task = zoo_task(cfg)
    data = task.load()
    backend = backend_cls(model_setup(cfg), task, data.n_params, 0, 1,
                          total_steps=cfg.total_steps(len(data.splits["train"][0])))
    backend.load_best(run / BEST_DIR)
    nets, ys = data.splits[split]
    return backend.evaluate(split, nets, ys), task.metric
