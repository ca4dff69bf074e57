"""Training with optax: the paper's optimiser and a compiled training step.

The protocol is the one of `scalegmn.tasks.train` (torch): AdamW, a learning rate that
rises linearly over `warmup_steps` and then stays constant (or follows a half cosine to 0),
gradients clipped by their global norm. The step is a pure function of (model, optimiser state, batch, labels, key).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, Protocol

import equinox as eqx
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

import jax
import jax.numpy as jnp
from scalegmn.weightgraph import ScaleGMNConfig

from .batch import DenseGraphBatch, GraphBatch
from .model import ScaleGMN
from .parallel import ShardedBatch

__all__ = ["TrainStep", "init_optimizer", "make_optimizer", "make_train_step", "warmup_constant", "warmup_cosine"]

LossFn = Callable[[Any, Any], Float[Array, " B"]]
"""A per-example loss: `(outputs, labels) -> [B]`; outputs `[B, d_out]` (invariant head) or
the edited `(node_features, edge_features)` (equivariant head), labels any pytree."""


def warmup_constant(lr: float, warmup_steps: int) -> optax.Schedule:
    """Learning rate `lr * min(1, (step + 1) / warmup_steps)` (torch's `LambdaLR` of the tasks).

    Args:
        lr: the learning rate after the warm-up.
        warmup_steps: number of steps of the linear rise (0: constant from the first step).
    """
    n = max(int(warmup_steps), 1)

    def schedule(count: Array) -> Array:
        return lr * jnp.minimum(1.0, (count + 1) / n)

    return schedule


def warmup_cosine(lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """`warmup_constant` for the warm-up, then `optax.cosine_decay_schedule` from `lr` to 0
    at step `total_steps` (the tasks' `lr_schedule="cosine"`, as `LambdaLR` gives it in torch).

    Args:
        lr: the learning rate at the end of the warm-up.
        warmup_steps: steps of the linear rise (0: the cosine starts at the first step).
        total_steps: the run's optimiser steps.
    """
    cosine = optax.cosine_decay_schedule(lr, max(int(total_steps) - int(warmup_steps), 1))
    return optax.join_schedules([warmup_constant(lr, warmup_steps), cosine], [int(warmup_steps)])


def make_optimizer(lr: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int = 0,
                   clip_norm: float | None = 10.0, lr_schedule: Literal["constant", "cosine"] = "constant",
                   total_steps: int = 0) -> optax.GradientTransformation:
    """AdamW with a linear warm-up, then a constant or cosine-decayed rate, after global-norm
    gradient clipping.

    Args:
        lr: learning rate after the warm-up.
        weight_decay: decoupled weight decay of AdamW (applied to every parameter, as
            `torch.optim.AdamW` does by default).
        warmup_steps: steps of the linear warm-up.
        clip_norm: maximum global gradient norm (`None`: no clipping).
        lr_schedule: `"constant"` after the warm-up, or `"cosine"` (`warmup_cosine`) down to 0
            at `total_steps`.
        total_steps: the run's optimiser steps (read by `"cosine"` only).

    Returns:
        An optax transformation; initialise it with `init_optimizer(optimizer, model)`.
    """
    if lr_schedule == "cosine":
        if total_steps < 1:
            raise ValueError(f"lr_schedule='cosine' needs the run's total_steps (>= 1); got {total_steps}")
        schedule = warmup_cosine(lr, warmup_steps, total_steps)
    elif lr_schedule == "constant":
        schedule = warmup_constant(lr, warmup_steps)
    else:
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine'; got {lr_schedule!r}")
    adamw = optax.adamw(schedule, weight_decay=weight_decay)
    if clip_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)


def init_optimizer(optimizer: optax.GradientTransformation, model: ScaleGMN) -> optax.OptState:
    """The optimiser state for the model's trainable arrays."""
    return optimizer.init(eqx.filter(model, eqx.is_inexact_array))


def _cross_entropy(out: Array, labels: Array) -> Array:
    return optax.softmax_cross_entropy_with_integer_labels(out, labels)


def _mse(out: Array, labels: Array) -> Array:
    diff = out - labels.reshape(out.shape)
    return jnp.mean(diff.reshape(diff.shape[0], -1) ** 2, axis=-1)


LOSSES: dict[str, LossFn] = {"cross_entropy": _cross_entropy, "mse": _mse}


def _strip(batch: Any) -> Any:
    """The batch without its `specs` (static and only needed for decoding): one compilation
    serves every batch of the same sizes, whatever its architectures."""
    if isinstance(batch, GraphBatch | DenseGraphBatch):
        return dataclasses.replace(batch, specs=())
    if isinstance(batch, ShardedBatch):
        return dataclasses.replace(batch, graphs=dataclasses.replace(batch.graphs, specs=()))
    return batch


def _loss_sum_and_count(model: ScaleGMN, batch: Any, labels: Array, key: Array | None,
                        loss_fn: LossFn) -> tuple[Array, Array]:
    """Sum of the per-example losses of the real graphs, and their number."""
    if isinstance(batch, ShardedBatch):
        n_dev = batch.mask.shape[0]
        keys = None if key is None else jax.random.split(key, n_dev)

        def per_device(graphs: GraphBatch | DenseGraphBatch, lab: Array, mask: Array, k: Array | None) -> Array:
            out = model.core(graphs, k)
            return jnp.sum(jnp.where(mask, loss_fn(out, lab), 0.0))

        sums = jax.vmap(per_device, in_axes=(0, 0, 0, None if keys is None else 0))(
            batch.graphs, labels, batch.mask, keys)
        return _reduce(sums, batch.mask)
    out = model.core(batch, key)
    per = loss_fn(out, labels)
    return jnp.sum(per), jnp.asarray(per.shape[0], per.dtype)


def _reduce(device_sums: Array, mask: Array) -> tuple[Array, Array]:
    """Per-device loss sums -> (global sum, global count): the mean is the one-device mean."""
    return jnp.sum(device_sums), jnp.sum(mask).astype(device_sums.dtype)


class TrainStep(Protocol):
    """`step(model, opt_state, batch, labels, key) -> (model, opt_state, loss)`."""

    def __call__(self, model: ScaleGMN, opt_state: optax.OptState, batch: Any, labels: Array,
                 key: PRNGKeyArray | None = None) -> tuple[ScaleGMN, optax.OptState, Float[Array, ""]]: ...


def make_train_step(config: ScaleGMNConfig, optimizer: optax.GradientTransformation,
                    loss: Literal["cross_entropy", "mse"] | LossFn = "cross_entropy") -> TrainStep:
    """A compiled training step: forward, backward, optimiser update.

    The loss is the mean over the batch's graphs of a per-example loss. The same step takes a
    `GraphBatch` from `collate` (one device) or a `ShardedBatch` from `shard_batch` (data
    parallel over a mesh); for the latter the per-device sums are added and divided by the
    global number of networks, so loss and gradient are the one-device ones. With a key and
    a `ShardedBatch`, each device draws its dropout from its own split of the key.

    Args:
        config: the model's configuration.
        optimizer: an optax transformation, e.g. from `make_optimizer`.
        loss: `"cross_entropy"` (integer labels `[B]`), `"mse"` (labels shaped like the
            outputs, or `[B]` for `d_out = 1`), or a function `(outputs, labels) -> [B]`.
            For the equivariant head the outputs are the edited `(node_features,
            edge_features)` in the batch's layout (a dense batch: `[B, N, 1]`, `[B, E, de]`),
            and the loss must be such a function.

    Raises:
        ValueError: a built-in loss with the equivariant head.

    Returns:
        `step(model, opt_state, batch, labels, key) -> (model, opt_state, loss)`; with a key
        the model runs in training mode (dropout drawn from the key), with `key=None` without
        dropout. Compiled with `eqx.filter_jit` once per batch size.

    Example:
        ```python
        import jax
        import jax.numpy as jnp
        from scalegmn.weightgraph import NetworkSpec, random_network
        from scalegmn.jax import ScaleGMN, ScaleGMNConfig, collate
        from scalegmn.jax import init_optimizer, make_optimizer, make_train_step

        cfg = ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=2)
        model = ScaleGMN(cfg, key=jax.random.key(0))
        opt = make_optimizer(lr=1e-3, warmup_steps=10)
        opt_state = init_optimizer(opt, model)
        step = make_train_step(cfg, opt)
        nets = [random_network(NetworkSpec.mlp([2, 4, 1]), rng=i, dtype="float32") for i in range(4)]
        labels = jnp.array([0, 1, 0, 1])
        model, opt_state, loss = step(model, opt_state, collate(nets), labels, jax.random.key(1))
        assert loss.shape == ()  # the batch's mean loss
        ```
    """
    if isinstance(loss, str) and config.head == "equivariant":
        raise ValueError(f"loss={loss!r} needs an invariant head (outputs [B, d_out]); for the equivariant "
                         "head pass loss=fn((node_features, edge_features), labels) -> [B]")
    loss_fn = LOSSES[loss] if isinstance(loss, str) else loss

    def mean_loss(model: ScaleGMN, batch: Any, labels: Array, key: Array | None) -> Array:
        total, count = _loss_sum_and_count(model, batch, labels, key, loss_fn)
        return total / count

    @eqx.filter_jit
    def compiled(model: ScaleGMN, opt_state: PyTree, batch: Any, labels: Array,
                 key: Array | None) -> tuple[ScaleGMN, PyTree, Array]:
        value, grads = eqx.filter_value_and_grad(mean_loss)(model, batch, labels, key)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, value

    def step(model: ScaleGMN, opt_state: optax.OptState, batch: Any, labels: Array,
             key: PRNGKeyArray | None = None) -> tuple[ScaleGMN, optax.OptState, Array]:
        if model.config != config:
            raise ValueError("the model's config differs from the one the step was made for")
        return compiled(model, opt_state, _strip(batch), labels, key)

    step.compiled = compiled  # type: ignore[attr-defined]
    return step
