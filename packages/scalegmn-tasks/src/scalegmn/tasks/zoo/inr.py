"""The INR zoo builder: one SIREN fitted to each image of a source.

Which images, which split each network belongs to, and each network's initialisation
follow from the seed alone (network `i` is initialised from `default_rng([seed, i])`), so
a resumed build and an uninterrupted one write the same zoo.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from scalegmn.weightgraph import NetworkSpec

from ..sources import ImageSource, load_source
from .build import BuildStats, ProgressFn, ShardTask, run_build
from .manifest import Manifest, ShardRecord, TargetInfo
from .store import write_shard


class INRZooOptions(BaseModel):
    """Options of an INR zoo build (all recorded in the manifest; resume needs the same).

    Attributes:
        count: networks to fit (default: one per image of the source).
        widths: SIREN layer widths `[2, ..., channels]`.
        w0: sine frequency.
        output_offset: constant added to the output (0.5 is the DWS convention).
        steps: full-batch Adam steps per network.
        lr: Adam learning rate.
        batch_size: networks fitted together in one stacked tensor.
        shard_size: networks per shard file (the unit of resume).
        val_fraction: fraction of networks in the val split.
        test_fraction: fraction in the test split (a source's official test set, if it has
            one, is the test split instead).
        seed: selects images, splits and initialisations.
        compile: use `torch.compile` for the fitting step.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    count: int | None = Field(default=None, ge=1)
    widths: tuple[int, ...] = (2, 32, 32, 1)
    w0: float = Field(default=30.0, gt=0)
    output_offset: float = 0.5
    steps: int = Field(default=500, ge=0)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=8, ge=1)
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
    digest = hashlib.sha256(np.ascontiguousarray(src.images).tobytes())
    digest.update(np.ascontiguousarray(src.labels).tobytes())
    return {
        "name": src.name, "n_images": len(src), "image_shape": list(src.image_shape),
        "sha256": digest.hexdigest(), "official_test": src.is_test is not None,
    }


def plan_inr_zoo(src: ImageSource, opts: INRZooOptions) -> tuple[Manifest, list[ShardTask]]:
    """The manifest template and shard tasks of an INR zoo (no fitting happens here).

    Raises:
        ValueError: if `count` exceeds the number of images, or the widths do not match.
    """
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
        source=_source_info(src), build=build, seed=opts.seed,
        columns=["id", "target", "split", "group", "psnr", "mse"],
    )
    return manifest, tasks


def _inr_worker(root: str, task: ShardTask, options: dict[str, Any], report: ProgressFn) -> ShardRecord:
    from .siren import fit_sirens, siren_init

    opts = INRZooOptions.model_validate(options)
    spec = NetworkSpec.siren(opts.widths, w0=opts.w0, output_offset=opts.output_offset)
    images = task.payload["images"]
    x = images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 else images.astype(np.float32)
    n, L = task.count, spec.n_layers
    ws = [np.empty((n, *spec.layers[i].weight_shape), np.float32) for i in range(L)]
    bs = [np.empty((n, spec.layers[i].n_out), np.float32) for i in range(L)]
    mse = np.empty(n, np.float64)
    for lo in range(0, n, opts.batch_size):
        hi = min(lo + opts.batch_size, n)
        ids = list(range(lo, hi))
        if opts.compile and len(ids) < opts.batch_size:
            ids += [hi - 1] * (opts.batch_size - len(ids))  # one shape: no recompilation
        inits = [siren_init(opts.widths, opts.w0, np.random.default_rng([opts.seed, task.start + i]))
                 for i in ids]
        w_init = [np.stack([ini[0][i] for ini in inits]) for i in range(L)]
        b_init = [np.stack([ini[1][i] for ini in inits]) for i in range(L)]
        res = fit_sirens(x[ids], w_init, b_init, opts.steps, w0=opts.w0,
                         output_offset=opts.output_offset, lr=opts.lr, compile=opts.compile)
        k = hi - lo
        for i in range(L):
            ws[i][lo:hi] = res.weights[i][:k]
            bs[i][lo:hi] = res.biases[i][:k]
        mse[lo:hi] = res.mse[:k]
        report(k)
    psnr = 10.0 * np.log10(1.0 / np.maximum(mse, 1e-30))
    columns = {
        "id": np.arange(task.start, task.start + n, dtype=np.int64),
        "target": task.payload["labels"].astype(np.int64),
        "split": task.payload["split"].astype(np.int8),
        "group": task.payload["image_index"].astype(np.int64),
        "psnr": psnr.astype(np.float32),
        "mse": mse.astype(np.float32),
    }
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
            (e.g. `steps=200`).
        workers: processes (one thread each).
        resume: finish an interrupted build of the same zoo.
        progress: show a progress bar.
        on_shard: called after each shard is recorded.

    Returns:
        `(manifest, stats)`; open the zoo with `scalegmn.tasks.datasets.open_zoo`.

    Example:
        ```python
        from scalegmn.tasks.zoo.inr import build_inr_zoo

        manifest, stats = build_inr_zoo("/tmp/zoo", "digits", count=64, steps=100)
        ```
    """
    opts = (options or INRZooOptions()).model_copy(update=kwargs)
    opts = INRZooOptions.model_validate(opts.model_dump())
    src = load_source(source) if isinstance(source, str) else source
    if src.images.ndim != 3:
        raise ValueError("INR sources must be grayscale (N, H, W)")
    if opts.widths[-1] != 1:
        raise ValueError(f"grayscale images need a 1-channel SIREN output, got widths {opts.widths}")
    template, tasks = plan_inr_zoo(src, opts)
    return run_build(
        out, template, tasks, _inr_worker, opts.model_dump(mode="json"), workers=workers,
        resume=resume, progress=progress, on_shard=on_shard, description=f"INRs ({src.name})",
    )
