"""What the protocol knows of a backend, and the settings it hands one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalegmn.weightgraph import Network, ScaleGMNConfig

from ..config import LoopConfig
from ..models import ModelKind
from ..tasks import Task


@dataclass(frozen=True)
class ModelSetup:
    """The model of a run, decided once.

    Attributes:
        kind: the model kind (from the registry).
        gmn: the ScaleGMN configuration (the kind's symmetry applied).
        mlp_hidden: width of the MLP on weights.
        loop: the optimisation settings.
    """

    kind: ModelKind
    gmn: ScaleGMNConfig
    mlp_hidden: int
    loop: LoopConfig


class Backend(ABC):
    """One backend's adapter (see `scalegmn.tasks.run.backends`).

    Args:
        setup: the model and optimiser settings.
        task: the task (loss, metric, target dtype).
        n_params: parameters of one input network (the MLP baseline's input size).
        rank: this process's rank.
        world: the number of processes.
        total_steps: the run's optimiser steps (`epochs * steps per epoch`), which the
            learning-rate schedule spans (`lr_factor`).
    """

    name: str

    @staticmethod
    def check_environment() -> None:
        """Refuse (TrainError) before any work when this backend cannot run here."""
        return None

    @staticmethod
    def check_device(device: str) -> None:
        """Refuse (TrainError) before any work when `device` is not there."""
        return None

    @staticmethod
    def processes(threads: int | None) -> tuple[int, int]:
        """Start the processes' group if any; `(rank, world)`."""
        return 0, 1

    @staticmethod
    def barrier(world: int) -> None:
        """Wait for every process."""
        return None

    @abstractmethod
    def __init__(self, setup: ModelSetup, task: Task, n_params: int, rank: int, world: int,
                 total_steps: int = 0) -> None: ...

    @abstractmethod
    def train_mode(self) -> None:
        """Switch the model to training (dropout on)."""

    @abstractmethod
    def train_step(self, nets: Sequence[Network], targets: np.ndarray, step: int) -> float:
        """One clipped AdamW step on a global batch; the batch's mean loss.

        Raises:
            NonFiniteError: the loss or the gradient is not finite (nothing was updated).
        """

    @abstractmethod
    def evaluate(self, split: str, nets: Sequence[Network], targets: np.ndarray) -> float:
        """The task's metric on a split (batches of 256, no dropout)."""

    @abstractmethod
    def finite(self) -> bool:
        """Whether every parameter is finite."""

    @abstractmethod
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """This backend's part of the resumable state: arrays and JSON information."""

    @abstractmethod
    def load_state(self, tensors: dict[str, np.ndarray], info: dict[str, Any], path: Path) -> None:
        """Restore what `state` wrote (`path` names the file in errors)."""

    @abstractmethod
    def save_best(self, path: Path) -> None:
        """Write the model to the folder `path` (the run's `best/`)."""

    @abstractmethod
    def load_best(self, path: Path) -> None:
        """Replace the model by the one in the folder `path`."""

    @abstractmethod
    def keep_best(self, path: Path | None = None) -> None:
        """Remember the current parameters in memory (the best so far), or those saved in the
        folder `path` by `save_best` (a resumed run's best)."""

    @abstractmethod
    def restore_best(self) -> None:
        """Go back to the parameters `keep_best` remembered."""

    @abstractmethod
    def n_params_model(self) -> int:
        """Number of trainable scalars of the model."""

    @abstractmethod
    def edited_networks(self, nets: Sequence[Network]) -> list[Network]:
        """The networks an equivariant-head model makes of `nets` (inference mode)."""

    @property
    @abstractmethod
    def model(self) -> Any:
        """The backend's model object."""
