"""The INR zoo builder: one SIREN fitted to each image of a source.

Which images, which split each network belongs to, and each network's initialisation
follow from the seed alone (network `i` is initialised from `default_rng([seed, i])`), so
a resumed build and an uninterrupted one write the same zoo.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from scalegmn.weightgraph import NetworkSpec

from ..sources import ImageSource, load_source
from .build import BuildStats, ProgressFn, ShardTask, run_build
from .manifest import Manifest, ShardRecord, TargetInfo
from .store import write_shard

RecipeName = Literal["dws", "siren"]


class INRRecipe(BaseModel):
    """How the SIRENs of a zoo are initialised and fitted (recorded in the zoo's manifest).

    Attributes:
        name: `"dws"` or `"siren"`.
        init: `"dws"` (`dws_init`) or `"siren"` (`siren_init`).
        lr: Adam learning rate.
        steps: at most this many full-batch Adam steps per network.
        psnr_stop: early-stopping threshold in dB (None: every network runs all steps).
        description: what the recipe is, in words.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RecipeName
    init: Literal["dws", "siren"]
    lr: float = Field(gt=0)
    steps: int = Field(ge=0)
    psnr_stop: float | None = Field(default=None, gt=0)
    description: str = ""


RECIPES: dict[str, INRRecipe] = {
    "dws": INRRecipe(
        name="dws", init="dws", lr=5e-4, steps=1000, psnr_stop=40.0,
        description=(
            "the published DWS MNIST/Fashion-MNIST INRs: every sine layer (the first included) "
            "U(-sqrt(6/n_in)/w0, sqrt(6/n_in)/w0), zero biases, last layer nn.Linear's default "
            "init, output + 0.5, coordinates on a [-1, 1] grid, Adam lr 5e-4 on the pixel MSE, "
            "at most 1000 steps, a network stops at the first step it reaches 40 dB PSNR"
        ),
    ),
    "siren": INRRecipe(
        name="siren", init="siren", lr=1e-3, steps=500, psnr_stop=None,
        description=(
            "the SIREN paper's initialisation: first layer U(-1/n_in, 1/n_in), later sine layers "
            "U(-sqrt(6/n_in)/w0, sqrt(6/n_in)/w0), biases U(-1/sqrt(n_in), 1/sqrt(n_in)); Adam "
            "lr 1e-3 on the pixel MSE, a fixed number of steps (500), no early stopping"
        ),
    ),
}
"""The named fitting recipes of INR zoos."""

DWS_SOURCES = ("mnist5k", "fashion-mnist")
"""Sources whose default recipe is `"dws"` (the published INRs of these data sets were fitted so)."""


def default_recipe(source_name: str) -> RecipeName:
    """The recipe used when none is given: `"dws"` for MNIST and Fashion-MNIST, else `"siren"`."""
    return "dws" if source_name in DWS_SOURCES else "siren"


class INRZooOptions(BaseModel):
    """Options of an INR zoo build (all recorded in the manifest; resume needs the same).

    `recipe` fixes the initialisation and the defaults of `steps`, `lr` and `psnr_stop`;
    a value given for one of those overrides the recipe's (and is recorded as such).

    Attributes:
        recipe: `"dws"` or `"siren"` (see `RECIPES`); None picks by source
            (`default_recipe`).
        count: networks to fit (default: one per image of the source).
        widths: SIREN layer widths `[2, ..., channels]`.
        w0: sine frequency.
        output_offset: constant added to the output (0.5 is the DWS convention).
        steps: at most this many full-batch Adam steps per network (None: the recipe's).
        lr: Adam learning rate (None: the recipe's).
        psnr_stop: a network stops at the first step it reaches this PSNR in dB (None: the
            recipe's).
        batch_size: networks fitted together in one stacked tensor (finished ones are
            replaced by pending ones, so the shape stays fixed). None: 8 with `compile`
            (the activations stay in the core's cache), else 32. The fits do not depend on it.
        shard_size: networks per shard file (the unit of resume).
        val_fraction: fraction of networks in the val split.
        test_fraction: fraction in the test split (a source's official test set, if it has
            one, is the test split instead).
        seed: selects images, splits and initialisations.
        compile: use `torch.compile` for the fitting step.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    recipe: RecipeName | None = None
    count: int | None = Field(default=None, ge=1)
    widths: tuple[int, ...] = (2, 32, 32, 1)
    w0: float = Field(default=30.0, gt=0)
    output_offset: float = 0.5
    steps: int | None = Field(default=None, ge=0)
    lr: float | None = Field(default=None, gt=0)
    psnr_stop: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    shard_size: int = Field(default=256, ge=1)
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    test_fraction: float = Field(default=0.1, ge=0, lt=1)
    seed: int = 0
    compile: bool = False

    @model_validator(mode="after")
    def _check(self) -> INRZooOptions:
        if len(self.widths) < 2 or self.widths[0] != 2:
            raise ValueError(f"SIREN widths must start with 2 (pixel coordinates), got {self.widths}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return self

    def resolved(self, source_name: str) -> INRZooOptions:
        """These options with the recipe chosen and `steps`, `lr`, `psnr_stop` filled from it."""
        name = self.recipe or default_recipe(source_name)
        r = RECIPES[name]
        update: dict[str, Any] = {"recipe": name}
        if self.steps is None:
            update["steps"] = r.steps
        if self.lr is None:
            update["lr"] = r.lr
        if self.psnr_stop is None:
            update["psnr_stop"] = r.psnr_stop
        return self.model_copy(update=update)


def recipe_record(opts: INRZooOptions) -> dict[str, Any]:
    """What the manifest records of the recipe of resolved options: name, init and settings."""
    if opts.recipe is None:
        raise ValueError("recipe_record needs resolved options (INRZooOptions.resolved)")
    r = RECIPES[opts.recipe]
    return {
        "name": r.name, "init": r.init, "optimizer": "adam", "loss": "mse", "coordinates": "[-1, 1] grid",
        "lr": opts.lr, "steps": opts.steps, "psnr_stop": opts.psnr_stop, "w0": opts.w0,
        "output_offset": opts.output_offset,
        "overridden": sorted(k for k in ("lr", "steps", "psnr_stop")
                             if getattr(opts, k) != getattr(r, k)),
        "description": r.description,
    }


def assign_splits(
    n: int, rng: np.random.Generator, val_fraction: float, test_fraction: float,
    is_test: np.ndarray | None = None,
) -> np.ndarray:
    """Split codes (0 train, 1 val, 2 test) for `n` items, exact sizes, drawn from `rng`.

    With `is_test` (the source's official test set), those items are the test split and
    `val_fraction` of the others form the validation split.
    """
    split = np.zeros(n, dtype=np.int8)
    if is_test is not None:
        split[is_test] = 2
        rest = np.nonzero(~is_test)[0]
        n_val = round(val_fraction * len(rest))
        split[rest[rng.permutation(len(rest))[:n_val]]] = 1
        return split
    perm = rng.permutation(n)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    split[perm[:n_test]] = 2
    split[perm[n_test : n_test + n_val]] = 1
    return split


def _source_info(src: ImageSource) -> dict[str, Any]:
    return {
        "name": src.name, "n_images": len(src), "image_shape": list(src.image_shape),
        "sha256": src.sha256(), "official_test": src.is_test is not None,
    }


INR_COLUMNS = ("id", "target", "split", "group", "psnr", "mse", "steps", "stopped")
"""Per-network columns of an INR zoo: `psnr`/`mse` of the kept parameters, `steps` (Adam steps
taken: the stopping step, or all of them) and `stopped` (1 where the PSNR threshold stopped it)."""


def plan_inr_zoo(src: ImageSource, opts: INRZooOptions) -> tuple[Manifest, list[ShardTask]]:
    """The manifest template and shard tasks of an INR zoo (no fitting happens here).

    `opts` is resolved against the source first (`INRZooOptions.resolved`).

    Raises:
        ValueError: if `count` exceeds the number of images, or the widths do not match.
    """
    opts = opts.resolved(src.name)
    n = len(src)
    count = opts.count if opts.count is not None else n
    if count > n:
        raise ValueError(f"count={count} but the source {src.name!r} has only {n} images")
    rng = np.random.default_rng(opts.seed)
    images_used = rng.permutation(n)[:count]
    is_test = None if src.is_test is None else src.is_test[images_used]
    split = assign_splits(count, rng, opts.val_fraction, opts.test_fraction, is_test)
    spec = NetworkSpec.siren(opts.widths, w0=opts.w0, output_offset=opts.output_offset)
    tasks = []
    for k, start in enumerate(range(0, count, opts.shard_size)):
        ids = np.arange(start, min(start + opts.shard_size, count))
        img = images_used[ids]
        tasks.append(ShardTask(
            index=k, spec_index=0, start=int(start), count=len(ids),
            payload={
                "images": np.ascontiguousarray(src.images[img]), "labels": src.labels[img],
                "split": split[ids], "image_index": img.astype(np.int64),
            },
        ))
    build = opts.model_dump(mode="json")
    build["count"] = count
    manifest = Manifest(
        kind="inr", specs=[spec], n_networks=count, n_shards=len(tasks),
        target=TargetInfo(name="label", kind="class", n_classes=src.n_classes,
                          class_names=list(src.class_names)),
        source=_source_info(src), build=build, seed=opts.seed, recipe=recipe_record(opts),
        columns=list(INR_COLUMNS),
    )
    return manifest, tasks


def _inr_worker(root: str, task: ShardTask, options: dict[str, Any], report: ProgressFn) -> ShardRecord:
    from .siren import dws_init, fit_sirens, siren_init

    opts = INRZooOptions.model_validate(options)
    if opts.recipe is None or opts.steps is None or opts.lr is None:
        raise ValueError("the INR worker needs resolved options (INRZooOptions.resolved)")
    init_fn = dws_init if RECIPES[opts.recipe].init == "dws" else siren_init
    spec = NetworkSpec.siren(opts.widths, w0=opts.w0, output_offset=opts.output_offset)
    images = task.payload["images"]
    x = images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 else images.astype(np.float32)
    n, L = task.count, spec.n_layers
    inits = [init_fn(opts.widths, opts.w0, np.random.default_rng([opts.seed, task.start + i])) for i in range(n)]
    w_init = [np.stack([ini[0][i] for ini in inits]) for i in range(L)]
    b_init = [np.stack([ini[1][i] for ini in inits]) for i in range(L)]
    res = fit_sirens(x, w_init, b_init, opts.steps, w0=opts.w0, output_offset=opts.output_offset,
                     lr=opts.lr, compile=opts.compile, psnr_stop=opts.psnr_stop,
                     batch_size=opts.batch_size or (8 if opts.compile else 32), on_done=report)
    columns = {
        "id": np.arange(task.start, task.start + n, dtype=np.int64),
        "target": task.payload["labels"].astype(np.int64),
        "split": task.payload["split"].astype(np.int8),
        "group": task.payload["image_index"].astype(np.int64),
        "psnr": res.psnr.astype(np.float32),
        "mse": res.mse.astype(np.float32),
        "steps": res.steps.astype(np.int64),
        "stopped": res.stopped.astype(np.int8),
    }
    ws = [w.astype(np.float32) for w in res.weights]
    bs = [b.astype(np.float32) for b in res.biases]
    return write_shard(root, task.index, 0, spec, task.start, ws, bs, columns)


def build_inr_zoo(
    out: str | os.PathLike[str],
    source: str | ImageSource = "mnist5k",
    options: INRZooOptions | None = None,
    *,
    workers: int = 1,
    resume: bool = False,
    progress: bool = True,
    on_shard: Callable[[ShardRecord], None] | None = None,
    **kwargs: Any,
) -> tuple[Manifest, BuildStats]:
    """Fit one SIREN per image of `source` and write the zoo to `out`.

    Args:
        out: output folder (created; must be new unless `resume`).
        source: a source name (`"mnist5k"`, `"fashion-mnist"`, `"digits"`, a `.npz` path) or
            an `ImageSource`.
        options: build options; keyword arguments override single fields
            (e.g. `recipe="dws"`, `steps=200`). The recipe defaults to `"dws"` for MNIST
            and Fashion-MNIST and to `"siren"` otherwise (`default_recipe`).
        workers: processes (one thread each).
        resume: finish an interrupted build of the same zoo.
        progress: show a progress bar.
        on_shard: called after each shard is recorded.

    Returns:
        `(manifest, stats)`; open the zoo with `scalegmn.tasks.datasets.open_zoo`.

    Raises:
        ValueError: for options that do not fit the source (count, widths) or an unknown recipe.

    Example:
        ```python
        from scalegmn.tasks.zoo.inr import build_inr_zoo

        manifest, stats = build_inr_zoo("/tmp/zoo", "mnist5k", count=64, recipe="dws")
        print(manifest.recipe["name"], stats.networks_per_second)
        ```
    """
    opts = (options or INRZooOptions()).model_copy(update=kwargs)
    recipe = opts.recipe
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"unknown INR recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    opts = INRZooOptions.model_validate(opts.model_dump())
    src = load_source(source) if isinstance(source, str) else source
    opts = opts.resolved(src.name)
    if src.images.ndim != 3:
        raise ValueError("INR sources must be grayscale (N, H, W)")
    if opts.widths[-1] != 1:
        raise ValueError(f"grayscale images need a 1-channel SIREN output, got widths {opts.widths}")
    template, tasks = plan_inr_zoo(src, opts)
    return run_build(
        out, template, tasks, _inr_worker, opts.model_dump(mode="json"), workers=workers,
        resume=resume, progress=progress, on_shard=on_shard, description=f"INRs ({src.name})",
    )
