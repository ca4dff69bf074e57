"""INR editing: learn to edit SIRENs so that their images are dilated (method section 5).

A ScaleGMN with the equivariant head (`head="equivariant"`) reads the graph of a SIREN and
returns an edited graph of the same shape. The edited weights and biases are rendered on the
image's pixel grid (coordinates in `[-1, 1]^2`, see `coordinate_grid`) by `render_sirens`,
which is differentiable, and the loss is the pixel MSE to the dilated image of the SIREN
(`dilate`: 3x3 ones kernel, one iteration, i.e. a 3x3 max filter).

The target of each SIREN is the dilated *source image* it was fitted to: an INR zoo records
the index of that image in the source (column `group`) and the source's name and checksum
(manifest `source`). When the source cannot be loaded again (a user array, or a checksum
that no longer matches), the dilated render of the SIREN itself is the target instead
(`target="auto"` falls back to it; the result records which one was used).

Training is the run protocol's (`scalegmn.tasks.run`) with `EditingTask`: the same loop,
run folder, `resume`, torchrun and `backend="jax"` as the zoo tasks. The renderer, the
dilation and the SIREN checks live in `scalegmn.tasks.sirens` and are re-exported here.

Example:
    ```python
    from scalegmn.tasks.editing import EditConfig, train_editing

    r = train_editing("zoos/mnist5k-300", EditConfig(epochs=5, backend="jax"), out="runs/edit")
    print(r["test_mse"], r["identity_test_mse"])
    ```
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from scalegmn.weightgraph import ScaleGMNConfig

from .run.backends.base import ModelSetup
from .run.config import LoopConfig, TrainError, read_config_file, validation_line
from .run.models import get_model_kind
from .run.protocol import RunSpec, check_backend, run_protocol
from .run.tasks import EditingTask
from .sirens import (
    EditingError,
    check_siren,
    dilate,
    dilate_numpy,
    plot_edits,
    render_numpy,
    render_sirens,
    render_sirens_jax,
    source_images,
)

__all__ = [
    "EditConfig",
    "EditingError",
    "check_siren",
    "dilate",
    "dilate_numpy",
    "load_edit_config",
    "plot_edits",
    "render_numpy",
    "render_sirens",
    "render_sirens_jax",
    "source_images",
    "train_editing",
]

TargetKind = Literal["auto", "source", "render"]


class EditConfig(LoopConfig):
    """One INR-editing run (unknown keys and impossible values are refused before any work).

    Attributes:
        gmn: the model; `head` must be `"equivariant"` (the default here).
        max_eval: use only the first `max_eval` val and test INRs.
        target: `"source"` (the dilated source image; error if it cannot be loaded),
            `"render"` (the dilated render of the input SIREN), `"auto"` (source if possible).
        n_examples: test INRs shown in the PNG.

    The optimisation settings (`lr`, `weight_decay`, `warmup_steps`, `grad_clip`,
    `batch_size`, `epochs`, `seed`, `max_train`), `backend` and `threads` are those of
    `LoopConfig`.
    """

    gmn: ScaleGMNConfig = Field(
        default_factory=lambda: ScaleGMNConfig(d_hidden=32, n_layers=2, head="equivariant")
    )
    max_eval: int | None = Field(default=None, ge=1)
    target: TargetKind = "auto"
    n_examples: int = Field(default=6, ge=1)

    @field_validator("gmn")
    @classmethod
    def _equivariant(cls, v: ScaleGMNConfig) -> ScaleGMNConfig:
        if v.head != "equivariant":
            raise ValueError('INR editing needs gmn.head = "equivariant" (the model returns an edited graph)')
        return v


def load_edit_config(path: str | os.PathLike[str]) -> EditConfig:
    """Read an `EditConfig` from a JSON or YAML file (one-line errors naming file and line).

    Raises:
        TrainError: the file is missing, malformed or not a valid `EditConfig`.
    """
    from pydantic import ValidationError

    raw = read_config_file(path)
    try:
        return EditConfig.model_validate(raw)
    except ValidationError as err:
        raise TrainError(f"{path}: invalid editing config: {validation_line(err)}") from None


def train_editing(
    zoo: str | os.PathLike[str],
    config: EditConfig | None = None,
    progress: bool = True,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train a ScaleGMN to dilate the images of an INR zoo's SIRENs (method section 5).

    The run protocol's loop: AdamW with linear warm-up then a constant learning rate,
    gradient clipping, model selection on the validation MSE; the test MSE is measured at
    the best validation epoch. Beside it the identity edit (the unedited SIREN's render
    against the same target) is reported on every split: the model has learnt something
    only if it is below that.

    Args:
        zoo: an INR zoo folder (`scalegmn zoo build inr ...`) of grayscale SIRENs.
        config: the run (default `EditConfig()`); `config.backend` picks torch or JAX.
        progress: show a progress bar.
        out: the run folder: `run.json`, `metrics.jsonl` (one line per epoch), the resumable
            `last.safetensors`, `best/`, `result.json`, `curves.png` and `editing.png`
            (input / edited / target of a few test INRs); nothing is written without it.
        resume: continue the run in `out` (same zoo and config).

    Returns:
        A dict with `best_epoch`, `val_mse`, `test_mse`, `identity_val_mse`,
        `identity_test_mse`, `target` (`"source"` or `"render"`), `image_shape`,
        `n_train`, `n_val`, `n_test`, `n_params_model`, `seconds`, `history`
        (per epoch: `loss`, `val_mse`, `seconds`), `png` (or None) and `model` (the
        ScaleGMN of the backend with the parameters of the best validation epoch).

    Raises:
        EditingError: if the zoo is not a zoo of grayscale SIRENs, or `target="source"` and
            the source images cannot be found.
        TrainError: the folder, the resume or the backend do not fit; a non-finite loss.
    """
    cfg = config or EditConfig()
    check_backend(cfg.backend, cfg.device)
    task = EditingTask(str(zoo), cfg.target, cfg.max_train, cfg.max_eval, cfg.n_examples, cfg.gmn)
    kind = get_model_kind("scalegmn")
    spec = RunSpec(config={"zoo": str(zoo), **json.loads(cfg.model_dump_json())},
                   model=ModelSetup(kind=kind, gmn=cfg.gmn, mlp_hidden=1, loop=cfg),
                   backend=cfg.backend, tag="editing")
    return run_protocol(spec, task, out=Path(out) if out is not None else None, resume=resume,
                        progress=progress)
