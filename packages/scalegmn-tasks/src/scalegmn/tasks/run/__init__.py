"""The run protocol of `scalegmn.tasks`: one epoch loop for every task, model kind and backend.

* `protocol`: the loop (`run_protocol`), the run folder's life cycle, resume, selection;
* `tasks`: `Task` and its three implementations (classification, generalisation prediction,
  INR editing);
* `models`: the registry of model kinds;
* `backends`: the torch and JAX adapters;
* `folder`: the run folder's files, its lock and the checksummed state;
* `config`: `LoopConfig`, `RunConfig`, reading config files.
"""

from __future__ import annotations

from .config import (
    LoopConfig,
    NonFiniteError,
    RunConfig,
    TrainError,
    load_run_config,
    read_config_file,
)
from .models import MODEL_KINDS, ModelKind, get_model_kind
from .protocol import RunSpec, run_protocol
from .tasks import ClassificationTask, EditingTask, GeneralisationTask, RunData, Task, zoo_task

__all__ = [
    "MODEL_KINDS",
    "ClassificationTask",
    "EditingTask",
    "GeneralisationTask",
    "LoopConfig",
    "ModelKind",
    "NonFiniteError",
    "RunConfig",
    "RunData",
    "RunSpec",
    "Task",
    "TrainError",
    "get_model_kind",
    "load_run_config",
    "read_config_file",
    "run_protocol",
    "zoo_task",
]
