"""The JAX backend of `train_run` (`RunConfig.backend = "jax"`), kept as a name: the adapter is
`scalegmn.tasks.run.backends.jax` and the loop the run protocol's, shared with torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .run.config import RunConfig

__all__ = ["build_jax_model", "evaluate_run_jax", "score_jax", "train_run_jax"]


def build_jax_model(cfg: RunConfig, n_params: int) -> Any:
    """The equinox module for `cfg.model`, initialised from `jax.random.key(cfg.seed)`.

    `"mlp"` is an `eqx.nn.MLP` (two hidden layers of `mlp_hidden`, ReLU) on the flattened
    weights, as the torch baseline; the others a `scalegmn.jax.ScaleGMN` (permutation-only for
    the GMN baselines). Parameters are float32.
    """
    from .run.backends.jax import build_model, require_jax
    from .train import model_setup

    require_jax()
    return build_model(model_setup(cfg), n_params)


def score_jax(model: Any, batches: Sequence[tuple[Any, np.ndarray]], classify: bool,
              predict: Callable[[Any, Any], Any] | None = None) -> float:
    """Accuracy (classification) or Kendall's tau of `sigmoid(f(G))` (regression) over batches.

    Args:
        model: a `scalegmn.jax.ScaleGMN` (or, with `predict`, any model).
        batches: `(batch, targets)` pairs, e.g. `collate(nets)` and a numpy array.
        classify: accuracy of the argmax, else Kendall's tau of the first output's sigmoid.
        predict: `(model, batch) -> outputs [B, d_out]`; default `model(batch)` (no dropout).
    """
    import jax

    from .run.tasks import kendall_tau

    predict = predict or (lambda m, b: m(b))
    preds = []
    for xb, _ in batches:
        out = predict(model, xb)
        preds.append(np.asarray(out.argmax(1)) if classify else np.asarray(jax.nn.sigmoid(out[:, 0])))
    pr, yy = np.concatenate(preds), np.concatenate([y for _, y in batches])
    return float((pr == yy).mean()) if classify else kendall_tau(pr, yy)


def evaluate_run_jax(cfg: RunConfig, best: Path, split: str) -> tuple[float, str]:
    """The metric of a JAX run's best model (the folder `best`) on one split of its zoo."""
    from .run.backends.jax import JaxBackend
    from .run.tasks import zoo_task
    from .train import model_setup

    JaxBackend.check_environment()
    task = zoo_task(cfg)
    data = task.load()
    backend = JaxBackend(model_setup(cfg), task, data.n_params, 0, 1,
                         total_steps=cfg.total_steps(len(data.splits["train"][0])))
    backend.load_best(Path(best))
    nets, ys = data.splits[split]
    return backend.evaluate(split, nets, ys), task.metric


def train_run_jax(cfg: RunConfig, out: str | Path | None = None, resume: bool = False,
                  log_path: str | Path | None = None, progress: bool = True,
                  on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """`train_run` with `backend="jax"` (same arguments and result)."""
    from .train import train_run

    return train_run(cfg.model_copy(update={"backend": "jax"}), out=out, resume=resume, log_path=log_path,
                     progress=progress, on_epoch=on_epoch)
