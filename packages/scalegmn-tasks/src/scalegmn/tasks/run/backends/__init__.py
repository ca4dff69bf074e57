"""Backend adapters of the run protocol: `torch` and `jax`.

An adapter builds the model of the run's kind (`scalegmn.tasks.run.models`), turns networks
into batches, does one training step (clipped AdamW with a warm-up), evaluates a split with
the task's metric, writes and reads its part of the resumable state, and saves and loads
the best model. `get_backend(name)` imports one adapter only: the JAX path never imports torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..config import TrainError

BACKENDS = {"torch": ("scalegmn.tasks.run.backends.torch", "TorchBackend"),
            "jax": ("scalegmn.tasks.run.backends.jax", "JaxBackend")}


def get_backend(name: str) -> Any:
    """The adapter class of backend `name` (`"torch"` or `"jax"`).

    Raises:
        TrainError: for an unknown name.
    """
    if name not in BACKENDS:
        raise TrainError(f"unknown backend {name!r}; use one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name]
    return getattr(import_module(module), cls)
