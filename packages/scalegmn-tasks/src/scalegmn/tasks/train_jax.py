"""The JAX backend of `train_run` (`RunConfig.backend = "jax"`): the same protocol, run folder
and resume contract as the torch loop, with `scalegmn.jax` and optax.

Identical to the torch loop: the data (`prepare_run_data`: input scaling, baseline
transforms), the batch order (a numpy `default_rng(seed)` permutation per epoch), AdamW with
a linear warm-up then a constant rate and global-norm clipping (`scalegmn.jax.make_optimizer`),
the losses and metrics, model selection on validation, the rows of `metrics.jsonl` and the
keys of `result.json`. The initial weights and dropout masks are drawn with JAX's random
numbers (from `seed`), so the two backends do not follow the same trajectory.

With several JAX devices (`jax.device_count() > 1`) every global batch is split over them
with `scalegmn.jax.shard_batch` (parameters and optimiser state replicated); the loss and
the gradient are the one-device ones. The MLP baseline always runs on one device.

`last.safetensors` holds the model's arrays (`model.<name>`), the optax state flattened with
`jax.tree_util.tree_flatten` (`optim.<index>`; leaf count and shapes are checked on load),
and in its metadata the numpy random state and the run's progress. `best/` is a
`scalegmn.jax` checkpoint, which `scalegmn.torch.load_checkpoint` also reads; the MLP's best
weights are `best/model.safetensors` with the torch `Sequential` names.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scalegmn.weightgraph import Network

from .train import (
    BEST_DIR,
    METRICS_FILE,
    RUN_FILE,
    STATE_FILE,
    RunConfig,
    TrainError,
    _eval_batches,
    _json_default,
    _start_run_dir,
    _write_json_atomic,
    append_row,
    finish_run,
    metric,
    model_gmn_config,
    prepare_run_data,
)

__all__ = ["build_jax_model", "evaluate_run_jax", "score_jax", "train_run_jax"]

MLP_FILE = "model.safetensors"

# Compiled training steps by (config, optimiser settings, task): runs of one config in a
# process (a resume, a sweep over seeds, tests) compile once.
_STEPS: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _require_jax() -> None:
    """Refuse, with what to install, when the JAX backend's packages are missing."""
    try:
        import equinox  # noqa: F401
        import jax  # noqa: F401
        import optax  # noqa: F401

        import scalegmn.jax  # noqa: F401
    except ImportError as err:
        raise TrainError(f"backend='jax' needs jax, equinox and optax ({err}): install scalegmn-jax "
                         f"(pip install -e packages/scalegmn-jax, or scalegmn-tasks[jax])") from None


def _check_not_torchrun() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainError("backend='jax' does not run under torchrun (WORLD_SIZE>1): start one process; "
                         "it trains data parallel over every JAX device (jax.devices())")


def build_jax_model(cfg: RunConfig, n_params: int) -> Any:
    """The equinox module for `cfg.model`, initialised from `jax.random.key(cfg.seed)`.

    `"mlp"` is an `eqx.nn.MLP` (two hidden layers of `mlp_hidden`, ReLU) on the flattened
    weights, as the torch baseline; the others a `scalegmn.jax.ScaleGMN` (permutation-only for
    the GMN baselines). Parameters are float32.
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    key = jax.random.key(cfg.seed)
    if cfg.model == "mlp":
        return eqx.nn.MLP(n_params, cfg.gmn.d_out, cfg.mlp_hidden, 2, activation=jax.nn.relu,
                          dtype=jnp.float32, key=key)
    from scalegmn.jax import ScaleGMN

    return ScaleGMN(model_gmn_config(cfg), key=key, dtype=jnp.float32)


def _is_mlp(cfg: RunConfig) -> bool:
    return cfg.model == "mlp"


def _flat(nets: Sequence[Network]) -> np.ndarray:
    return np.stack([n.flat() for n in nets]).astype(np.float32)


def _mlp_names(model: Any) -> list[str]:
    """The torch `Sequential` names of the MLP's Linears (`0.weight`, `0.bias`, `2.weight`, ...)."""
    return [f"{2 * i}.{w}" for i in range(len(model.layers)) for w in ("weight", "bias")]


def _model_arrays(model: Any) -> dict[str, np.ndarray]:
    """The model's trainable arrays by name (checkpoint names; torch names for the MLP)."""
    if hasattr(model, "params"):
        return {k: np.ascontiguousarray(np.asarray(v)) for k, v in model.params.items()}
    arrays = [a for lin in model.layers for a in (lin.weight, lin.bias)]
    return {k: np.ascontiguousarray(np.asarray(a)) for k, a in zip(_mlp_names(model), arrays, strict=True)}


def _with_arrays(model: Any, arrays: dict[str, np.ndarray]) -> Any:
    """`model` with its arrays replaced by `arrays` (as `_model_arrays` names them)."""
    import equinox as eqx
    import jax.numpy as jnp

    if hasattr(model, "params"):
        if set(arrays) != set(model.params):
            raise TrainError(f"the saved model has parameters {sorted(set(arrays) ^ set(model.params))} "
                             f"that this config does not (or the other way round)")
        return type(model)(model.config, params={k: jnp.asarray(arrays[k]) for k in model.params})
    names = _mlp_names(model)
    leaves = [jnp.asarray(arrays[n]) for n in names]
    return eqx.tree_at(lambda m: [a for lin in m.layers for a in (lin.weight, lin.bias)], model, leaves)


def _predict_fn(cfg: RunConfig) -> Callable[[Any, Any], Any]:
    """`(model, batch) -> outputs [B, d_out]` in inference mode, compiled."""
    import equinox as eqx
    import jax

    if _is_mlp(cfg):
        return eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
    return lambda m, b: m(b)


def _eval_batch(cfg: RunConfig, nets: Sequence[Network]) -> Any:
    import jax.numpy as jnp

    if _is_mlp(cfg):
        return jnp.asarray(_flat(nets))
    from scalegmn.jax import collate

    return collate(nets, jnp.float32)


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

    predict = predict or (lambda m, b: m(b))
    preds = []
    for xb, _ in batches:
        out = predict(model, xb)
        preds.append(np.asarray(out.argmax(1)) if classify else np.asarray(jax.nn.sigmoid(out[:, 0])))
    return metric(preds, batches, classify)


def _per_example_loss(classify: bool) -> Callable[[Any, Any], Any]:
    import jax
    import optax

    if classify:
        return optax.softmax_cross_entropy_with_integer_labels

    def mse_sigmoid(out: Any, y: Any) -> Any:
        return (jax.nn.sigmoid(out[:, 0]) - y) ** 2

    return mse_sigmoid


def _mlp_step(optimizer: Any, loss_fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """The compiled training step of the MLP baseline (mean per-example loss, AdamW update)."""
    import equinox as eqx
    import jax

    @eqx.filter_jit
    def step(model: Any, opt_state: Any, x: Any, y: Any, key: Any = None) -> tuple[Any, Any, Any]:
        def mean_loss(m: Any) -> Any:
            return loss_fn(jax.vmap(m)(x), y).mean()

        value, grads = eqx.filter_value_and_grad(mean_loss)(model)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, value

    return step


def _save_state(path: Path, model: Any, opt_state: Any, rng: np.random.Generator,
                meta: dict[str, Any]) -> None:
    """Everything needed to continue the run, in one safetensors file (atomic)."""
    import jax
    from safetensors.numpy import save_file

    tensors = {f"model.{k}": v for k, v in _model_arrays(model).items()}
    leaves = jax.tree_util.tree_leaves(opt_state)
    for i, leaf in enumerate(leaves):
        tensors[f"optim.{i}"] = np.array(leaf, copy=True)  # not ascontiguousarray: keeps 0-d counts 0-d
    info = {"meta": meta, "rng_numpy": rng.bit_generator.state, "optim_leaves": len(leaves),
            "optim_shapes": [list(np.shape(leaf)) for leaf in leaves]}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(info, default=_json_default),
                                           "backend": "jax"})
    os.replace(tmp, path)


def _load_state(path: Path, model: Any, opt_state: Any,
                rng: np.random.Generator) -> tuple[Any, Any, dict[str, Any]]:
    """Restore model, optax state (structure from the fresh `opt_state`) and numpy random state."""
    import jax
    import jax.numpy as jnp
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), "np") as f:
        metadata = f.metadata() or {}
    if metadata.get("backend") != "jax":
        raise TrainError(f"{path} is not the state of a JAX run")
    info = json.loads(metadata["state"])
    tensors = load_file(str(path))
    model = _with_arrays(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    leaves, treedef = jax.tree_util.tree_flatten(opt_state)
    shapes = [list(np.shape(leaf)) for leaf in leaves]
    saved = [list(tensors[f"optim.{i}"].shape) if f"optim.{i}" in tensors else None
             for i in range(info["optim_leaves"])]
    if info["optim_leaves"] != len(leaves) or info["optim_shapes"] != shapes or saved != shapes:
        raise TrainError(f"{path}: the saved optimiser state ({info['optim_leaves']} arrays) does not "
                         f"fit this run's optimiser ({len(leaves)} arrays)")
    restored = [jnp.asarray(tensors[f"optim.{i}"], dtype=jnp.asarray(leaf).dtype)
                for i, leaf in enumerate(leaves)]
    opt_state = jax.tree_util.tree_unflatten(treedef, restored)
    rng.bit_generator.state = info["rng_numpy"]
    meta: dict[str, Any] = info["meta"]
    return model, opt_state, meta


def _save_best(cfg: RunConfig, model: Any, path: Path) -> None:
    if _is_mlp(cfg):
        from safetensors.numpy import save_file

        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (MLP_FILE + ".tmp")
        save_file(_model_arrays(model), str(tmp))
        os.replace(tmp, path / MLP_FILE)
        return
    from scalegmn.jax import save_checkpoint

    save_checkpoint(model, path)


def _load_best(cfg: RunConfig, path: Path, n_params: int) -> Any:
    if _is_mlp(cfg):
        from safetensors.numpy import load_file

        return _with_arrays(build_jax_model(cfg, n_params), load_file(str(path / MLP_FILE)))
    from scalegmn.jax import load_checkpoint

    return load_checkpoint(path)


def evaluate_run_jax(cfg: RunConfig, best: Path, split: str) -> tuple[float, str]:
    """The metric of a JAX run's best model (the folder `best`) on one split of its zoo."""
    _require_jax()
    data, task = prepare_run_data(cfg)
    model = _load_best(cfg, best, data["train"][0][0].n_params())
    nets, ys = data[split]
    classify = task == "classification"
    value = score_jax(model, _eval_batches(cfg, nets, ys, _eval_batch), classify, _predict_fn(cfg))
    return value, "accuracy" if classify else "kendall_tau"


def train_run_jax(
    cfg: RunConfig,
    out: str | Path | None = None,
    resume: bool = False,
    log_path: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """`train_run` with JAX (called by `train_run` for `backend="jax"`; same arguments and result).

    Raises:
        TrainError: before any training: jax/equinox missing, started under torchrun, or a
            zoo, config or resume that does not fit.
    """
    _require_jax()
    _check_not_torchrun()
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from rich.progress import Progress

    from scalegmn.jax import (
        collate,
        make_mesh,
        make_optimizer,
        make_train_step,
        replicate,
        shard_batch,
    )

    out_dir = Path(out) if out is not None else None
    has_state = _start_run_dir(out_dir, cfg, resume) if out_dir is not None else False
    data, task = prepare_run_data(cfg)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(out_dir / RUN_FILE, json.loads(cfg.model_dump_json()))

    classify = task == "classification"
    short = "acc" if classify else "tau"
    nets, ys = data["train"]
    model = build_jax_model(cfg, nets[0].n_params())
    step_key = (cfg.model == "mlp", model_gmn_config(cfg).model_dump_json(), cfg.lr, cfg.weight_decay,
                cfg.warmup_steps, cfg.grad_clip, classify)
    if step_key not in _STEPS:
        optimizer = make_optimizer(cfg.lr, cfg.weight_decay, cfg.warmup_steps, clip_norm=cfg.grad_clip)
        loss_fn = _per_example_loss(classify)
        _STEPS[step_key] = (optimizer, _mlp_step(optimizer, loss_fn) if _is_mlp(cfg)
                            else make_train_step(model.config, optimizer, loss_fn))
    optimizer, step = _STEPS[step_key]
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    mesh = make_mesh() if jax.device_count() > 1 and not _is_mlp(cfg) else None
    label_dtype = jnp.int32 if classify else jnp.float32
    # Dropout keys only when there is dropout: step t draws from fold_in(root, t), so a
    # resumed run needs no key state.
    dropout_root = None
    if cfg.gmn.dropout > 0 and not _is_mlp(cfg):
        dropout_root = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    predict = _predict_fn(cfg)
    pre = {s: _eval_batches(cfg, n, y, _eval_batch) for s, (n, y) in data.items() if s != "train"}

    def train_batch(idx: np.ndarray) -> tuple[Any, Any]:
        sel = [nets[i] for i in idx]
        if _is_mlp(cfg):
            return jnp.asarray(_flat(sel)), jnp.asarray(ys[idx], label_dtype)
        if mesh is not None and len(idx) >= mesh.devices.size:
            return shard_batch(sel, ys[idx].astype(label_dtype), mesh, dtype=jnp.float32)
        # one device, or a last batch smaller than the device count: every device computes it
        return collate(sel, jnp.float32), jnp.asarray(ys[idx], label_dtype)

    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = math.ceil(len(nets) / cfg.batch_size)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val": -math.inf, "test": math.nan, "best_epoch": -1}
    start_epoch, seconds_before = 0, 0.0
    if has_state and out_dir is not None:
        model, opt_state, meta = _load_state(out_dir / STATE_FILE, model, opt_state, rng)
        history, best, start_epoch = meta["history"], meta["best"], meta["epoch"] + 1
        seconds_before = meta["seconds"]
    if mesh is not None:
        model, opt_state = replicate(model, mesh), replicate(opt_state, mesh)
    logs = [Path(p) for p in (log_path, out_dir / METRICS_FILE if out_dir else None) if p is not None]
    t0 = time.perf_counter() - seconds_before
    with Progress(disable=not progress, transient=True) as bar:
        task_bar = bar.add_task(f"{cfg.model} (jax)", total=cfg.epochs * steps_per_epoch,
                                completed=start_epoch * steps_per_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            order = rng.permutation(len(nets))
            losses = []
            for k in range(steps_per_epoch):
                idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                xb, yb = train_batch(idx)
                t = epoch * steps_per_epoch + k
                key = None if dropout_root is None else jax.random.fold_in(dropout_root, t)
                model, opt_state, loss = step(model, opt_state, xb, yb, key)
                losses.append(float(loss))
                bar.advance(task_bar)
            val = score_jax(model, pre["val"], classify, predict)
            row = {"epoch": epoch, "loss": float(np.mean(losses)), f"val_{short}": val,
                   "seconds": time.perf_counter() - t0}
            if val > best["val"]:
                test = score_jax(model, pre["test"], classify, predict)
                best = {"val": val, "test": test, "best_epoch": epoch}
                if out_dir is not None:
                    _save_best(cfg, model, out_dir / BEST_DIR)
            history.append(row)
            append_row(logs, cfg.model, row)
            if out_dir is not None:
                _save_state(out_dir / STATE_FILE, model, opt_state, rng,
                            {"epoch": epoch, "history": history, "best": best, "seconds": row["seconds"]})
            if on_epoch:
                on_epoch(row)
    return finish_run(cfg, task, best, history, time.perf_counter() - t0, len(nets),
                      sum(int(v.size) for v in _model_arrays(model).values()), out_dir)
