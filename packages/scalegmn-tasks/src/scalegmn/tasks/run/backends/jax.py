"""The JAX adapter: `scalegmn.jax.ScaleGMN` or an `eqx.nn.MLP`, optax AdamW with the same
warm-up and clipping (`scalegmn.jax.make_optimizer`), data parallel over `jax.devices()`.

With several JAX devices every global batch is split over them with
`scalegmn.jax.shard_batch` (parameters and optimiser state replicated); the loss and the
gradient are the one-device ones. The MLP on weights always runs on one device. The initial
weights and dropout masks are drawn with JAX's random numbers (from `seed`; step `t`'s
dropout key is folded from the seed and `t`, so a resume needs no key state).

The state holds the model's arrays under their pytree paths (`model.<path>`) and the optax
state flattened with `jax.tree_util` (`optim.<index>`; leaf count and shapes are checked on
load). `best/` is a `scalegmn.jax` checkpoint, which `scalegmn.torch.load_checkpoint` also
reads; the MLP's best weights are `best/model.safetensors` under the torch `Sequential` names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalegmn.weightgraph import Network
from scalegmn.weightgraph.io import atomic_write

from ..config import NonFiniteError, TrainError
from ..tasks import Task
from .base import Backend, ModelSetup

MLP_FILE = "model.safetensors"
EVAL_BATCH = 256

# Compiled training steps by (model, optimiser settings, task): runs of one config in a
# process (a resume, a sweep over seeds, tests) compile once.
_STEPS: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def require_jax() -> None:
    """Refuse, with what to install, when the JAX backend's packages are missing."""
    try:
        import equinox  # noqa: F401
        import jax  # noqa: F401
        import optax  # noqa: F401

        import scalegmn.jax  # noqa: F401
    except ImportError as err:
        raise TrainError(f"backend='jax' needs jax, equinox and optax ({err}): install scalegmn-jax "
                         f"(pip install -e packages/scalegmn-jax, or scalegmn-tasks[jax])") from None


def _mlp_names(model: Any) -> list[str]:
    """The torch `Sequential` names of the MLP's Linears (`0.weight`, `0.bias`, `2.weight`, ...)."""
    return [f"{2 * i}.{w}" for i in range(len(model.layers)) for w in ("weight", "bias")]


def _mlp_leaves(m: Any) -> list[Any]:
    return [a for lin in m.layers for a in (lin.weight, lin.bias)]


def _flat(nets: Sequence[Network]) -> Any:
    import jax.numpy as jnp

    return jnp.asarray(np.stack([n.flat() for n in nets]).astype(np.float32))


@dataclass(frozen=True)
class JaxFamily:
    """How one model family is built, batched, applied and saved in JAX."""

    build: Callable[[ModelSetup, int], Any]
    batch: Callable[[Sequence[Network]], Any]
    predict: Callable[[Any, Any], Any]
    save_best: Callable[[Any, Path], None]
    load_best: Callable[[ModelSetup, int, Path], Any]
    shardable: bool


def _build_scalegmn(setup: ModelSetup, n_params: int) -> Any:
    import jax
    import jax.numpy as jnp

    from scalegmn.jax import ScaleGMN

    return ScaleGMN(setup.gmn, key=jax.random.key(setup.loop.seed), dtype=jnp.float32)


def _graph_batch(nets: Sequence[Network]) -> Any:
    import jax.numpy as jnp

    from scalegmn.jax import collate

    return collate(nets, jnp.float32)


def _save_scalegmn(model: Any, path: Path) -> None:
    from scalegmn.jax import save_checkpoint

    save_checkpoint(model, path)


def _load_scalegmn(setup: ModelSetup, n_params: int, path: Path) -> Any:
    from scalegmn.jax import load_checkpoint

    return load_checkpoint(path)


def _build_mlp(setup: ModelSetup, n_params: int) -> Any:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    return eqx.nn.MLP(n_params, setup.gmn.d_out, setup.mlp_hidden, 2, activation=jax.nn.relu,
                      dtype=jnp.float32, key=jax.random.key(setup.loop.seed))


_vmapped: dict[str, Any] = {}


def _mlp_predict(model: Any, x: Any) -> Any:
    if "mlp" not in _vmapped:
        import equinox as eqx
        import jax

        def apply(m: Any, x: Any) -> Any:
            return jax.vmap(m)(x)

        _vmapped["mlp"] = eqx.filter_jit(apply)
    return _vmapped["mlp"](model, x)


def _save_mlp(model: Any, path: Path) -> None:
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(np.asarray(a)) for k, a in zip(_mlp_names(model), _mlp_leaves(model), strict=True)}
    atomic_write(path / MLP_FILE, save(arrays))


def _load_mlp(setup: ModelSetup, n_params: int, path: Path) -> Any:
    import equinox as eqx
    import jax.numpy as jnp
    from safetensors.numpy import load_file

    model = _build_mlp(setup, n_params)
    arrays = load_file(str(path / MLP_FILE))
    return eqx.tree_at(_mlp_leaves, model, [jnp.asarray(arrays[n]) for n in _mlp_names(model)])


def _graph_predict(model: Any, batch: Any) -> Any:
    return model(batch)


FAMILIES: dict[str, JaxFamily] = {
    "graph": JaxFamily(_build_scalegmn, _graph_batch, _graph_predict, _save_scalegmn, _load_scalegmn, True),
    "weights": JaxFamily(_build_mlp, _flat, _mlp_predict, _save_mlp, _load_mlp, False),
}


def build_model(setup: ModelSetup, n_params: int) -> Any:
    """The equinox module of the run's kind, initialised from `jax.random.key(seed)` (float32)."""
    return FAMILIES[setup.kind.family].build(setup, n_params)


def _mlp_step(optimizer: Any, loss_fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """The compiled training step of the MLP on weights (mean per-example loss, AdamW update)."""
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


def _arrays(model: Any) -> dict[str, np.ndarray]:
    """The model's trainable arrays by pytree path."""
    import equinox as eqx
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(model, eqx.is_inexact_array))[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


class JaxBackend(Backend):
    """The JAX adapter (see the module docstring and `Backend`)."""

    name = "jax"

    @staticmethod
    def check_environment() -> None:
        """jax, equinox, optax and scalegmn.jax importable; not under torchrun."""
        require_jax()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise TrainError("backend='jax' does not run under torchrun (WORLD_SIZE>1): start one process; "
                             "it trains data parallel over every JAX device (jax.devices())")

    @staticmethod
    def check_device(device: str) -> None:
        """A GPU asked for must be among JAX's devices (placement stays JAX's default)."""
        import jax

        if device.startswith("cuda") and not any(d.platform == "gpu" for d in jax.devices()):
            raise TrainError(f"device={device!r} but JAX sees no GPU (devices: {jax.devices()}); "
                             f"use device='cpu' or 'auto', or install jax with CUDA support")

    def __init__(self, setup: ModelSetup, task: Task, n_params: int, rank: int, world: int,
                 total_steps: int = 0) -> None:
        import equinox as eqx
        import jax
        import jax.numpy as jnp

        from scalegmn.jax import make_mesh, make_optimizer, make_train_step, replicate

        self.setup, self.task, self.n_params = setup, task, n_params
        self.family = FAMILIES[setup.kind.family]
        self._model = self.family.build(setup, n_params)
        loop = setup.loop
        key = (setup.kind.family, setup.gmn.model_dump_json(), setup.mlp_hidden, loop.lr, loop.weight_decay,
               loop.warmup_steps, loop.grad_clip, loop.lr_schedule, total_steps, task.cache_key())
        if key not in _STEPS:
            optimizer = make_optimizer(loop.lr, loop.weight_decay, loop.warmup_steps, clip_norm=loop.grad_clip,
                                       lr_schedule=loop.lr_schedule, total_steps=total_steps)
            step = (make_train_step(setup.gmn, optimizer, task.jax_loss) if self.family.shardable
                    else _mlp_step(optimizer, task.jax_loss))
            _STEPS[key] = (optimizer, step)
        self.optimizer, self.step = _STEPS[key]
        self.opt_state = self.optimizer.init(eqx.filter(self._model, eqx.is_inexact_array))
        self.mesh = make_mesh() if jax.device_count() > 1 and self.family.shardable else None
        self.label_dtype = jnp.int32 if task.torch_target_dtype.startswith("int") else jnp.float32
        # Dropout keys only when there is dropout: step t draws from fold_in(root, t).
        self.dropout_root = None
        if setup.gmn.dropout > 0 and self.family.shardable:
            self.dropout_root = jax.random.fold_in(jax.random.key(loop.seed), 1)
        self._replicate = replicate
        self._replicated = False
        self._eval: dict[str, list[tuple[Any, np.ndarray]]] = {}
        self._best: Any = None

    @property
    def model(self) -> Any:
        """The equinox module."""
        return self._model

    def _ensure_replicated(self) -> None:
        if self.mesh is not None and not self._replicated:
            self._model = self._replicate(self._model, self.mesh)
            self.opt_state = self._replicate(self.opt_state, self.mesh)
            self._replicated = True

    def train_mode(self) -> None:
        """Nothing to switch: a step with a key is training mode."""

    def train_step(self, nets: Sequence[Network], targets: np.ndarray, step: int) -> float:
        """One compiled step (sharded over the devices when there are several)."""
        import jax
        import jax.numpy as jnp

        from scalegmn.jax import shard_batch

        self._ensure_replicated()
        nets = list(nets)
        if self.mesh is not None and len(nets) >= self.mesh.devices.size:
            xb, yb = shard_batch(nets, np.asarray(targets).astype(self.label_dtype), self.mesh, dtype=jnp.float32)
        else:  # one device, or a last batch smaller than the device count: every device computes it
            xb, yb = self.family.batch(nets), jnp.asarray(targets, self.label_dtype)
        key = None if self.dropout_root is None else jax.random.fold_in(self.dropout_root, step)
        model, opt_state, loss = self.step(self._model, self.opt_state, xb, yb, key)
        value = float(loss)
        if not np.isfinite(value):
            raise NonFiniteError(f"the loss is {value}")
        self._model, self.opt_state = model, opt_state
        return value

    def evaluate(self, split: str, nets: Sequence[Network], targets: np.ndarray) -> float:
        """The task's metric over the split (its batches built once; no dropout)."""
        if split not in self._eval:
            self._eval[split] = [(self.family.batch(nets[i:i + EVAL_BATCH]), targets[i:i + EVAL_BATCH])
                                 for i in range(0, len(nets), EVAL_BATCH)]
        values = [self.task.jax_values(self.family.predict(self._model, xb), y) for xb, y in self._eval[split]]
        return self.task.score(np.concatenate(values), np.concatenate([y for _, y in self._eval[split]]))

    def finite(self) -> bool:
        """Whether every parameter is finite (a non-finite gradient shows here after the step)."""
        return all(bool(np.isfinite(v).all()) for v in _arrays(self._model).values())

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Model arrays by pytree path and the flattened optax state."""
        import jax

        tensors = {f"model.{k}": v for k, v in _arrays(self._model).items()}
        leaves = jax.tree_util.tree_leaves(self.opt_state)
        for i, leaf in enumerate(leaves):
            tensors[f"optim.{i}"] = np.array(leaf, copy=True)
        info = {"backend": self.name, "optim_leaves": len(leaves),
                "optim_shapes": [list(np.shape(leaf)) for leaf in leaves]}
        return tensors, info

    def load_state(self, tensors: dict[str, np.ndarray], info: dict[str, Any], path: Path) -> None:
        """Restore `state()`'s content (names, leaf count and shapes checked)."""
        import equinox as eqx
        import jax
        import jax.numpy as jnp

        if info.get("backend") != self.name:
            raise TrainError(f"{path} is not the state of a JAX run")
        params, static = eqx.partition(self._model, eqx.is_inexact_array)
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        names = [f"model.{jax.tree_util.keystr(p)}" for p, _ in flat]
        saved = {k for k in tensors if k.startswith("model.")}
        if set(names) != saved or any(tensors[n].shape != np.shape(v) for n, (_, v) in zip(names, flat, strict=True)):
            raise TrainError(f"{path}: the saved model has parameters {sorted(saved ^ set(names))[:6]} or shapes "
                             f"that this config does not; start a new run in another --out")
        restored = [jnp.asarray(tensors[n], dtype=jnp.asarray(v).dtype) for n, (_, v) in zip(names, flat, strict=True)]
        self._model = eqx.combine(jax.tree_util.tree_unflatten(treedef, restored), static)
        leaves, otree = jax.tree_util.tree_flatten(self.opt_state)
        shapes = [list(np.shape(leaf)) for leaf in leaves]
        got = [list(tensors[f"optim.{i}"].shape) if f"optim.{i}" in tensors else None
               for i in range(info["optim_leaves"])]
        if info["optim_leaves"] != len(leaves) or info["optim_shapes"] != shapes or got != shapes:
            raise TrainError(f"{path}: the saved optimiser state ({info['optim_leaves']} arrays) does not "
                             f"fit this run's optimiser ({len(leaves)} arrays)")
        self.opt_state = jax.tree_util.tree_unflatten(
            otree, [jnp.asarray(tensors[f"optim.{i}"], dtype=jnp.asarray(leaf).dtype) for i, leaf in enumerate(leaves)])
        self._replicated = False

    def save_best(self, path: Path) -> None:
        """`scalegmn.jax.save_checkpoint` (ScaleGMN) or `model.safetensors` (MLP, torch names)."""
        path.mkdir(parents=True, exist_ok=True)
        self.family.save_best(self._model, path)

    def load_best(self, path: Path) -> None:
        """Load a model `save_best` wrote."""
        self._model = self.family.load_best(self.setup, self.n_params, path)

    def keep_best(self, path: Path | None = None) -> None:
        """The model itself (equinox modules are immutable), or the one in `path`."""
        self._best = self._model if path is None else self.family.load_best(self.setup, self.n_params, path)

    def restore_best(self) -> None:
        """Back to the kept model."""
        if self._best is not None:
            self._model = self._best

    def n_params_model(self) -> int:
        """Number of trainable scalars."""
        return sum(int(v.size) for v in _arrays(self._model).values())

    def edited_networks(self, nets: Sequence[Network]) -> list[Network]:
        """Decode the equivariant head's output graphs."""
        batch = self.family.batch(nets)
        node, edge = self.family.predict(self._model, batch)
        return list(batch.to_networks(node, edge))
