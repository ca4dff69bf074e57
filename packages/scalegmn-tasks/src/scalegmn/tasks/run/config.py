"""The settings every run shares, the run config of the zoo tasks, and reading config files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scalegmn.weightgraph import ScaleGMNConfig

from ..augment import InrAugment
from ..data import DataField, ZooData, zoo_shorthand

ModelKindName = Literal["scalegmn", "gmn", "gmn_canon", "mlp"]
TaskName = Literal["auto", "classification", "regression"]
BackendName = Literal["torch", "jax"]


class TrainError(ValueError):
    """A run that cannot start or go on: bad config, a zoo that does not fit, a resume that
    does not match, a folder another run owns, a corrupt state, a non-finite loss."""


class NonFiniteError(TrainError):
    """The loss or the gradient became NaN or infinite; the run stopped at its last good state."""


class LoopConfig(BaseModel):
    """The optimisation settings every run shares (the paper's protocol).

    Attributes:
        lr: AdamW learning rate (reached at the end of the warm-up).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        lr_schedule: after the warm-up, `"constant"` keeps `lr`; `"cosine"` lowers it along a
            half cosine to 0 at the end of the run (the step after the last), i.e.
            `lr * (1 + cos(pi * (s - warmup_steps) / (total - warmup_steps))) / 2` at step
            `s` of `total = epochs * steps per epoch` (`lr_factor`).
        grad_clip: gradient norm clipping.
        batch_size: networks per step.
        epochs: passes over the (possibly truncated) train split.
        seed: model initialisation and batch order.
        max_train: use only the first `max_train` train networks.
        backend: `"torch"` (data parallel under torchrun) or `"jax"` (data parallel over
            `jax.devices()`).
        threads: torch threads per process (None: torch's default; the JAX backend ignores
            it: XLA's threads are fixed by `XLA_FLAGS` before jax starts).
        device: `"auto"` (a GPU if torch sees one, else the CPU; under torchrun the
            process's `LOCAL_RANK` GPU), `"cpu"`, `"cuda"` or `"cuda:N"`. A GPU that is
            not there stops the run before any work. The JAX backend places arrays on its
            default devices and only checks that a GPU exists when one is asked for.
        precision: `"float32"`, or `"bf16"`: the forward pass and the loss of training and
            evaluation run under `torch.autocast` with bfloat16 (parameters, gradients and
            optimiser state stay float32). Torch backend only; mainly for GPUs.

    NaN and infinite numbers are refused here and in the nested model configuration.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=100, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = Field(default=10.0, gt=0)
    batch_size: int = Field(default=32, ge=1)
    epochs: int = Field(default=10, ge=1)
    seed: int = 0
    max_train: int | None = Field(default=None, ge=1)
    backend: BackendName = "torch"
    threads: int | None = Field(default=None, ge=1)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    precision: Literal["float32", "bf16"] = "float32"

    def steps_per_epoch(self, n_train: int) -> int:
        """Optimiser steps of one epoch over `n_train` training networks (the last batch may be short)."""
        return math.ceil(n_train / self.batch_size)

    def total_steps(self, n_train: int) -> int:
        """Optimiser steps of the whole run (what `lr_schedule="cosine"` spans)."""
        return self.epochs * self.steps_per_epoch(n_train)

    @model_validator(mode="after")
    def _precision_backend(self) -> LoopConfig:
        if self.precision == "bf16" and self.backend != "torch":
            raise ValueError(
                "precision='bf16' (torch.autocast) is a torch-backend option; the JAX backend "
                "trains in float32: use backend='torch' or precision='float32'"
            )
        return self


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str = "constant") -> float:
    """The learning rate of optimiser step `step` (0-based) as a fraction of `lr`.

    A linear warm-up `(step + 1) / warmup_steps` to 1, then 1 (`"constant"`) or a half
    cosine from 1 at step `warmup_steps` to 0 at step `total_steps` (`"cosine"`). Both
    backends follow it: torch through `LambdaLR`, JAX through an optax schedule.

    Args:
        step: the optimiser step.
        warmup_steps: steps of the linear rise (0: none).
        total_steps: the run's optimiser steps (`epochs * steps per epoch`).
        schedule: `"constant"` or `"cosine"`.

    Example:
        ```python
        from scalegmn.tasks.run.config import lr_factor

        rates = [lr_factor(s, 2, 10, "cosine") for s in range(11)]
        assert rates[:3] == [0.5, 1.0, 1.0] and rates[10] < 1e-15  # warm-up, then down to 0 at step 10
        ```
    """
    warm = max(warmup_steps, 1)
    if step < warmup_steps or schedule == "constant":
        return min(1.0, (step + 1) / warm)
    span = max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def data_label(data: Any) -> str:
    """The folder of a data source, for messages: a zoo's `path` or a data set's `root`."""
    return str(data.path if isinstance(data, ZooData) else data.root)


class RunConfig(LoopConfig):
    """One training run on a zoo or a published data set (unknown keys and impossible values are refused before any work).

    Attributes:
        data: the data source (`scalegmn.tasks.data`): `{kind: zoo, path: ...}` (a zoo
            built by `scalegmn zoo build`), `dws`, `nfn_cifar` or `small_cnn_zoo`; a bare
            path has its kind detected. The shorthand `zoo: PATH` stands for
            `data: {kind: zoo, path: PATH}`.
        model: `"scalegmn"` (symmetry from the config, `"auto"` by default), `"gmn"` (the
            permutation-only GMN on group-normalised inputs), `"gmn_canon"` (GMN on
            canonicalised inputs) or `"mlp"` (an MLP on the flattened weights); see
            `scalegmn.tasks.run.models`.
        gmn: the model configuration (for scalegmn and the GMN baselines).
        mlp_hidden: width of the MLP baseline.
        task: `"classification"`, `"regression"` (generalisation prediction), or `"auto"`
            (from the zoo's target kind; an explicit task must agree with it).
        input_scaling: `"layer"` divides every layer's weights and biases by one scalar each,
            their root mean square over the training split (exact for every group: a fixed
            scalar per layer commutes with permutations, sign flips and scalings), so that
            tiny SIREN weights (~1e-2) reach the model at unit scale; `"none"` feeds raw weights.
        augment: exact geometric augmentation of INR training networks (random rotations,
            scalings and shifts of the image, done on the first layer's weights; see
            `scalegmn.tasks.augment`); None: none.

    The optimisation settings, `backend` and `threads` are those of `LoopConfig`.
    """

    data: DataField
    model: ModelKindName = "scalegmn"
    gmn: ScaleGMNConfig = Field(default_factory=lambda: ScaleGMNConfig(d_hidden=32, n_layers=2, d_out=10))
    mlp_hidden: int = Field(default=256, ge=1)
    task: TaskName = "auto"
    input_scaling: Literal["layer", "none"] = "layer"
    augment: InrAugment | None = None

    _zoo_shorthand = model_validator(mode="before")(zoo_shorthand)

    if TYPE_CHECKING:  # for type checkers: `zoo=PATH` is accepted in place of `data`
        def __init__(self, *, zoo: str | os.PathLike[str] | None = None, **values: Any) -> None: ...

    @property
    def zoo(self) -> str:
        """The data folder as a string (the zoo's path; a data set's root)."""
        return data_label(self.data)


def validation_line(err: Any) -> str:
    """A pydantic `ValidationError` as one line: `key: problem (got value)` per error, `; `-joined."""
    parts = []
    for e in err.errors():
        key = ".".join(str(x) for x in e.get("loc", ())) or "config"
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        parts.append(f"{key}: {e['msg']}{got}")
    return "; ".join(parts)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a JSON or YAML config file, with one-line errors naming file and line.

    Args:
        path: a `.json`, `.yaml` or `.yml` file.

    Returns:
        The parsed mapping (an empty YAML file gives `{}`).

    Raises:
        TrainError: the file is missing, is not valid JSON/YAML (the message names the line),
            or does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: no such config file")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise TrainError(f"{path}{line}: YAML syntax error: {problem}; fix the file at that line") from None
        raw = {} if raw is None else raw
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise TrainError(f"{path}:{err.lineno}: JSON syntax error: {err.msg}; fix the file at that line") from None
    if not isinstance(raw, dict):
        raise TrainError(f"{path}: a config file holds a mapping of keys to values, not a {type(raw).__name__}")
    return raw


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read a run config from a JSON or YAML file, with a message naming the file on error.

    Raises:
        TrainError: see `read_config_file`; or the content is not a valid `RunConfig`.
    """
    from pydantic import ValidationError

    raw = read_config_file(path)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise TrainError(f"{path}: invalid run config: {validation_line(err)}") from None
