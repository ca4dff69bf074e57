"""The CNN zoo builder: small CNNs trained with random hyperparameters, several checkpoints each.

The architecture is the Small CNN Zoo's (`NetworkSpec.small_cnn`: 3x3 stride-2 convs with
TensorFlow "same" padding, global average pooling, a dense classifier), with configurable
width and depth. Every training run draws its hyperparameters (activation, learning rate,
weight decay, initialisation scale, batch size, training-subset size, epochs) from
`default_rng([seed, run])`, saves checkpoints at fixed fractions of its training, and records
each checkpoint's test accuracy, the target of the zoo. All checkpoints of one run share a
split, so no run is seen in training and in test.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from scalegmn.weightgraph import ConvLayer, NetworkSpec, get_activation

from ..sources import ImageSource, load_source
from .build import BuildStats, ProgressFn, ShardTask, run_build
from .inr import _source_info, assign_splits
from .manifest import Manifest, ShardRecord, TargetInfo
from .store import write_shard

HYPERPARAMETERS = ("lr", "weight_decay", "init_scale", "batch_size", "train_size", "epochs")


class CNNZooOptions(BaseModel):
    """Options of a CNN zoo build (recorded in the manifest; resume needs the same).

    Attributes:
        count: training runs; the zoo holds `count * len(checkpoints)` networks.
        channels: width (channels of every conv layer).
        n_conv: depth (number of conv layers).
        image_size: pad images with zeros to this size (None: the source's size).
        activations: drawn uniformly per run.
        lr_range: log-uniform range of the Adam learning rate.
        weight_decay_range: log-uniform range of the L2 weight decay.
        init_scale_range: log-uniform range of the initialisation scale.
        batch_sizes: drawn uniformly per run.
        epochs: drawn uniformly per run.
        train_size_range: log-uniform number of training images per run (clipped to the pool).
        checkpoints: fractions of a run's training steps at which it is saved (0: at init).
        test_size: test images for the accuracy (from the official test set if the source
            has one, else held out from the source).
        val_fraction: fraction of runs in the val split of the zoo.
        test_fraction: fraction of runs in the test split of the zoo.
        shard_size: runs per shard.
        seed: everything random.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    count: int = Field(default=100, ge=1)
    channels: int = Field(default=16, ge=1)
    n_conv: int = Field(default=3, ge=1)
    image_size: int | None = Field(default=None, ge=1)
    activations: tuple[str, ...] = ("relu", "tanh")
    lr_range: tuple[float, float] = (3e-4, 3e-2)
    weight_decay_range: tuple[float, float] = (1e-6, 1e-2)
    init_scale_range: tuple[float, float] = (0.2, 3.0)
    batch_sizes: tuple[int, ...] = (16, 32, 64, 128)
    train_size_range: tuple[int, int] = (200, 20000)
    epochs: tuple[int, ...] = (1, 2, 4, 8)
    checkpoints: tuple[float, ...] = (0.1, 0.3, 1.0)
    test_size: int = Field(default=1000, ge=10)
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    test_fraction: float = Field(default=0.2, ge=0, lt=1)
    shard_size: int = Field(default=32, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> CNNZooOptions:
        for a in self.activations:
            NetworkSpec.small_cnn(activation=a, channels=1, n_conv=1, image_size=4)
        for name in ("lr_range", "weight_decay_range", "init_scale_range", "train_size_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        if not self.checkpoints or any(not 0 <= c <= 1 for c in self.checkpoints):
            raise ValueError(f"checkpoints are fractions of training in [0, 1], got {self.checkpoints}")
        if list(self.checkpoints) != sorted(set(self.checkpoints)):
            raise ValueError("checkpoints must be increasing and distinct")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return self


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw_run(opts: CNNZooOptions, run: int, pool_size: int) -> dict[str, Any]:
    """The hyperparameters of training run `run` (a pure function of the seed and `run`)."""
    rng = np.random.default_rng([opts.seed, run])
    lo, hi = opts.train_size_range
    return {
        "activation": str(rng.choice(list(opts.activations))),
        "lr": _log_uniform(rng, *opts.lr_range),
        "weight_decay": _log_uniform(rng, *opts.weight_decay_range),
        "init_scale": _log_uniform(rng, *opts.init_scale_range),
        "batch_size": int(rng.choice(list(opts.batch_sizes))),
        "train_size": int(min(round(_log_uniform(rng, lo, hi)), pool_size)),
        "epochs": int(rng.choice(list(opts.epochs))),
        "data_seed": int(rng.integers(2**31)),
    }


def _spec(opts: CNNZooOptions, activation: str, image_size: int, n_classes: int) -> NetworkSpec:
    return NetworkSpec.small_cnn(
        activation=activation, channels=opts.channels, n_conv=opts.n_conv, in_channels=1,
        image_size=image_size, n_classes=n_classes,
    )


def plan_cnn_zoo(src: ImageSource, opts: CNNZooOptions) -> tuple[Manifest, list[ShardTask]]:
    """The manifest template and shard tasks of a CNN zoo (no training happens here)."""
    rng = np.random.default_rng(opts.seed)
    n = len(src)
    if src.image_shape[0] != src.image_shape[1]:
        raise ValueError(f"CNN zoos need square images, got {src.image_shape}")
    size = opts.image_size or src.image_shape[0]
    if size < src.image_shape[0]:
        raise ValueError(f"image_size={size} is smaller than the source images {src.image_shape}")
    if src.is_test is not None:
        test_pool = np.nonzero(src.is_test)[0]
        pool = np.nonzero(~src.is_test)[0]
        test_ids = np.sort(rng.choice(test_pool, size=min(opts.test_size, len(test_pool)), replace=False))
    else:
        perm = rng.permutation(n)
        n_test = min(opts.test_size, n // 4)
        test_ids, pool = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    n_classes = src.n_classes
    runs = [draw_run(opts, r, len(pool)) for r in range(opts.count)]
    run_split = assign_splits(opts.count, rng, opts.val_fraction, opts.test_fraction)
    acts = list(opts.activations)
    specs = [_spec(opts, a, size, n_classes) for a in acts]
    order = sorted(range(opts.count), key=lambda r: acts.index(runs[r]["activation"]))
    per_run = len(opts.checkpoints)
    tasks: list[ShardTask] = []
    start = 0
    for a_idx, act in enumerate(acts):
        group = [r for r in order if runs[r]["activation"] == act]
        for lo in range(0, len(group), opts.shard_size):
            chunk = group[lo : lo + opts.shard_size]
            tasks.append(ShardTask(
                index=len(tasks), spec_index=a_idx, start=start, count=len(chunk) * per_run,
                payload={"runs": [{"run": r, **runs[r]} for r in chunk],
                         "split": [int(run_split[r]) for r in chunk],
                         "pool": pool, "test_ids": test_ids},
            ))
            start += len(chunk) * per_run
    build = opts.model_dump(mode="json")
    build["image_size"] = size
    source_info = _source_info(src)
    manifest = Manifest(
        kind="cnn", specs=specs, n_networks=start, n_shards=len(tasks),
        target=TargetInfo(name="test_accuracy", kind="regression"),
        source={**source_info, "test_images": len(test_ids), "train_pool": len(pool)},
        build=build, seed=opts.seed,
        columns=["id", "target", "split", "group", "activation", "checkpoint", "epoch", "step",
                 "train_loss", *HYPERPARAMETERS],
        categories={"activation": acts},
    )
    return manifest, tasks


_SOURCES: dict[str, ImageSource] = {}


def _get_source(ref: Any) -> ImageSource:
    if isinstance(ref, ImageSource):
        return ref
    src = _SOURCES.get(ref)
    if src is None:
        src = load_source(ref)
        _SOURCES[ref] = src
    return src


def _prepare_images(src: ImageSource, ids: NDArray, size: int) -> NDArray[np.float32]:
    x = src.as_float(ids)
    h, w = src.image_shape
    if size > h:
        t, le = (size - h) // 2, (size - w) // 2
        x = np.pad(x, ((0, 0), (t, size - h - t), (le, size - w - le)))
    return (x[:, None] - np.float32(0.5)) / np.float32(0.5)


def _forward(x: Any, params: list[Any], spec: NetworkSpec) -> Any:
    import torch.nn.functional as F

    h = x
    for i, layer in enumerate(spec.layers):
        w, b = params[2 * i], params[2 * i + 1]
        if isinstance(layer, ConvLayer):
            t, bo, le, r = layer.pads(h.shape[2], h.shape[3])
            h = F.conv2d(F.pad(h, (le, r, t, bo)), w, b, stride=layer.stride)
        else:
            if h.ndim == 4:
                h = h.mean(dim=(2, 3))
            h = F.linear(h, w, b)
        act = get_activation(layer.activation).torch_module(layer)
        if act is not None:
            h = act(h)
    return h


def train_run(
    spec: NetworkSpec, hp: dict[str, Any], x_pool: NDArray, y_pool: NDArray,
    x_test: NDArray, y_test: NDArray, checkpoints: tuple[float, ...],
) -> list[dict[str, Any]]:
    """Train one CNN and return each checkpoint: parameters, test accuracy, epoch, step.

    Args:
        spec: the architecture.
        hp: hyperparameters from `draw_run`.
        x_pool: `(n, 1, H, W)` training pool.
        y_pool: `(n,)` its labels.
        x_test: `(m, 1, H, W)` test images.
        y_test: `(m,)` their labels.
        checkpoints: fractions of the run's steps at which to save.
    """
    import torch

    rng = np.random.default_rng(hp["data_seed"])
    torch.manual_seed(hp["data_seed"])
    sub = rng.choice(len(x_pool), size=hp["train_size"], replace=False)
    xs, ys = torch.from_numpy(x_pool[sub]), torch.from_numpy(y_pool[sub])
    xt, yt = torch.from_numpy(x_test), torch.from_numpy(y_test)
    params = []
    for layer in spec.layers:
        fan_in = int(np.prod(layer.weight_shape[1:]))
        std = hp["init_scale"] / math.sqrt(fan_in)
        params.append(torch.from_numpy(rng.normal(0, std, layer.weight_shape).astype(np.float32)))
        params.append(torch.zeros(layer.n_out))
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    bs = hp["batch_size"]
    per_epoch = math.ceil(len(sub) / bs)
    total = per_epoch * hp["epochs"]
    at: dict[int, list[int]] = {}
    for k, c in enumerate(checkpoints):  # very short runs may save two checkpoints at one step
        at.setdefault(round(c * total), []).append(k)
    out: list[dict[str, Any]] = [{} for _ in checkpoints]
    step = 0
    losses: list[float] = []

    def save(ks: list[int]) -> None:
        with torch.no_grad():
            correct = 0
            for lo in range(0, len(xt), 1000):
                correct += int((_forward(xt[lo : lo + 1000], params, spec).argmax(1) == yt[lo : lo + 1000]).sum())
        ck = {
            "weights": [params[2 * i].detach().numpy().copy() for i in range(spec.n_layers)],
            "biases": [params[2 * i + 1].detach().numpy().copy() for i in range(spec.n_layers)],
            "test_accuracy": correct / len(xt), "step": step, "epoch": step / per_epoch,
            "train_loss": float(np.mean(losses[-per_epoch:])) if losses else float("nan"),
        }
        for k in ks:
            out[k] = ck

    if 0 in at:
        save(at[0])
    for _ in range(hp["epochs"]):
        perm = torch.from_numpy(rng.permutation(len(sub)))
        for lo in range(0, len(sub), bs):
            idx = perm[lo : lo + bs]
            loss = torch.nn.functional.cross_entropy(_forward(xs[idx], params, spec), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
            if step in at:
                save(at[step])
    return out


def _cnn_worker(root: str, task: ShardTask, options: dict[str, Any], report: ProgressFn) -> ShardRecord:
    opts = CNNZooOptions.model_validate({k: v for k, v in options.items() if not k.startswith("_")})
    src = _get_source(options["_source"])
    size = options["image_size"] or src.image_shape[0]
    acts = list(opts.activations)
    act = task.payload["runs"][0]["activation"]
    spec = _spec(opts, act, size, int(options["_n_classes"]))
    pool, test_ids = task.payload["pool"], task.payload["test_ids"]
    x_pool, y_pool = _prepare_images(src, pool, size), src.labels[pool]
    x_test, y_test = _prepare_images(src, test_ids, size), src.labels[test_ids]
    L, per_run = spec.n_layers, len(opts.checkpoints)
    ws: list[list[NDArray]] = [[] for _ in range(L)]
    bs: list[list[NDArray]] = [[] for _ in range(L)]
    cols: dict[str, list] = {c: [] for c in ("target", "split", "group", "activation", "checkpoint",
                                             "epoch", "step", "train_loss", *HYPERPARAMETERS)}
    for hp, split in zip(task.payload["runs"], task.payload["split"], strict=True):
        ckpts = train_run(spec, hp, x_pool, y_pool, x_test, y_test, opts.checkpoints)
        for k, ck in enumerate(ckpts):
            for i in range(L):
                ws[i].append(ck["weights"][i])
                bs[i].append(ck["biases"][i])
            cols["target"].append(ck["test_accuracy"])
            cols["split"].append(split)
            cols["group"].append(hp["run"])
            cols["activation"].append(acts.index(act))
            cols["checkpoint"].append(k)
            cols["epoch"].append(ck["epoch"])
            cols["step"].append(ck["step"])
            cols["train_loss"].append(ck["train_loss"])
            for h in HYPERPARAMETERS:
                cols[h].append(hp[h])
        report(per_run)
    dtypes = {"target": np.float32, "split": np.int8, "group": np.int64, "activation": np.int8,
              "checkpoint": np.int64, "epoch": np.float32, "step": np.int64, "train_loss": np.float32,
              "lr": np.float64, "weight_decay": np.float64, "init_scale": np.float64,
              "batch_size": np.int64, "train_size": np.int64, "epochs": np.int64}
    columns = {"id": np.arange(task.start, task.start + task.count, dtype=np.int64)}
    columns.update({c: np.asarray(v, dtype=dtypes[c]) for c, v in cols.items()})
    assert len(columns["id"]) == len(cols["target"]) == task.count
    return write_shard(
        root, task.index, task.spec_index, spec, task.start,
        [np.stack(w) for w in ws], [np.stack(b) for b in bs], columns,
    )


def build_cnn_zoo(
    out: str | os.PathLike[str],
    source: str | ImageSource = "mnist5k",
    options: CNNZooOptions | None = None,
    *,
    workers: int = 1,
    resume: bool = False,
    progress: bool = True,
    on_shard: Callable[[ShardRecord], None] | None = None,
    **kwargs: Any,
) -> tuple[Manifest, BuildStats]:
    """Train `count` CNNs with random hyperparameters on `source` and write the zoo to `out`.

    Args:
        out: output folder (created; must be new unless `resume`).
        source: a source name or an `ImageSource` (grayscale, square images).
        options: build options; keyword arguments override single fields.
        workers: processes (one thread each).
        resume: finish an interrupted build of the same zoo.
        progress: show a progress bar.
        on_shard: called after each shard is recorded.

    Returns:
        `(manifest, stats)`; the zoo's target is each checkpoint's test accuracy.
    """
    opts = (options or CNNZooOptions()).model_copy(update=kwargs)
    opts = CNNZooOptions.model_validate(opts.model_dump())
    src = load_source(source) if isinstance(source, str) else source
    template, tasks = plan_cnn_zoo(src, opts)
    run_opts = opts.model_dump(mode="json")
    run_opts["image_size"] = template.build["image_size"]
    run_opts["_source"] = source if isinstance(source, str) else src
    run_opts["_n_classes"] = src.n_classes
    return run_build(
        out, template, tasks, _cnn_worker, run_opts, workers=workers, resume=resume,
        progress=progress, on_shard=on_shard, description=f"CNNs ({src.name})",
    )
