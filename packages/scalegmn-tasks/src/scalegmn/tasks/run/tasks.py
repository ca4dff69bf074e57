"""What differs between tasks: data and targets, loss, metric, what is plotted.

The run protocol (`scalegmn.tasks.run.protocol`) trains every task with the same loop; a
`Task` supplies

* `load()`: the three splits as `(networks, targets)`, targets a numpy array `[n, ...]`;
* the loss, per backend: `torch_loss_sum(outputs, targets)` (summed over the batch: the
  protocol scales it so that data-parallel gradients average to the mean's) and
  `jax_loss(outputs, targets) -> [B]` (per example, as `scalegmn.jax.make_train_step` takes it);
* per-example evaluation values (`torch_values` / `jax_values`: a predicted class, a
  predicted score, an error) and `score(values, targets)`, the metric, with
  `higher_is_better`;
* `plot_curves` (`curves.png`) and `finish` (what the task adds to the result).

Three tasks: `ClassificationTask` (cross-entropy, accuracy), `GeneralisationTask`
(`MSE(sigmoid(f(G)), y)`, Kendall's tau) and `EditingTask` (the edited SIREN's render
against the dilated image, pixel MSE).
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scalegmn.weightgraph import Network

from .config import RunConfig, TrainError, data_label
from .models import get_model_kind

if TYPE_CHECKING:
    from .folder import RunFolder

SPLITS = ("train", "val", "test")


@dataclass
class RunData:
    """The splits of a run as the model sees them.

    Attributes:
        splits: `{"train"|"val"|"test": (networks, targets [n, ...])}`.
        extras: what the task reports beside the metric (e.g. a baseline).
        train_batch: with augmentation, `(indices, rng) -> networks`: the training networks
            of a step, transformed anew (the protocol seeds `rng` per step, so a resumed run
            draws the same); None: `splits["train"]` as they are.
    """

    splits: dict[str, tuple[list[Network], np.ndarray]]
    extras: dict[str, Any] = field(default_factory=dict)
    train_batch: Callable[[Sequence[int], np.random.Generator], list[Network]] | None = None

    @property
    def n_params(self) -> int:
        """Parameters of the first training network (the MLP baseline's input size)."""
        return self.splits["train"][0][0].n_params()


class Task(ABC):
    """One task of the run protocol (see the module docstring).

    Attributes:
        name: the task's name in results (`"classification"`, `"regression"`, `"editing"`).
        metric: the metric's name (`"accuracy"`, `"kendall_tau"`, `"mse"`).
        short: the metric's short name in history rows and results (`val_<short>`).
        higher_is_better: model selection keeps the epoch with the highest (else lowest)
            validation metric.
        torch_target_dtype: the torch dtype name of the targets (`"int64"`, `"float32"`).
        keeps_best_model: the result holds the model of the best validation epoch.
    """

    name: str
    metric: str
    short: str
    higher_is_better: bool = True
    torch_target_dtype: str = "float32"
    keeps_best_model: bool = False

    @abstractmethod
    def load(self) -> RunData:
        """Read the splits and their targets (and check they fit the run)."""

    def worst(self) -> float:
        """The starting point of model selection."""
        return -math.inf if self.higher_is_better else math.inf

    def improves(self, value: float, best: float) -> bool:
        """Whether a validation `value` beats `best`."""
        return value > best if self.higher_is_better else value < best

    @abstractmethod
    def torch_loss_sum(self, outputs: Any, targets: Any) -> Any:
        """The loss summed over the batch (a 0-d tensor)."""

    @abstractmethod
    def torch_values(self, outputs: Any, targets: Any) -> np.ndarray:
        """Per-example evaluation values `[B]` (numpy)."""

    @abstractmethod
    def jax_loss(self, outputs: Any, targets: Any) -> Any:
        """The per-example loss `[B]` (traced by JAX)."""

    @abstractmethod
    def jax_values(self, outputs: Any, targets: Any) -> np.ndarray:
        """Per-example evaluation values `[B]` (numpy)."""

    @abstractmethod
    def score(self, values: np.ndarray, targets: np.ndarray) -> float:
        """The metric of a split from its per-example values and targets."""

    def cache_key(self) -> tuple[Any, ...]:
        """What, beside the model and optimiser settings, fixes a compiled JAX step."""
        return (type(self).__name__,)

    def plot_curves(self, history: Sequence[dict[str, Any]], path: Path, title: str) -> None:
        """Training loss and validation metric per epoch, as a PNG at `path`."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = [h["epoch"] for h in history]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
        a1.plot(ep, [h["loss"] for h in history], marker="o")
        a1.set_xlabel("epoch")
        a1.set_ylabel("training loss")
        a2.plot(ep, [h[f"val_{self.short}"] for h in history], marker="o")
        a2.set_xlabel("epoch")
        a2.set_ylabel(f"validation {self.metric.replace('_', ' ')}")
        fig.suptitle(title)
        fig.tight_layout()
        try:
            fig.savefig(path, dpi=110)
        finally:
            plt.close(fig)

    def finish(self, data: RunData, backend: Any, folder: RunFolder | None) -> dict[str, Any]:
        """What the task adds to the result once training is over (default: `data.extras`)."""
        return dict(data.extras)


def kendall_tau(pred: np.ndarray, target: np.ndarray) -> float:
    """Kendall's tau-b between predictions and targets (scipy); 0 where it is undefined (constant input)."""
    from scipy.stats import kendalltau

    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return 0.0
    tau = float(kendalltau(pred, target).statistic)
    return 0.0 if math.isnan(tau) else tau


# -- the zoo tasks: classification and generalisation prediction --------------------------


def layer_scales(networks: Sequence[Network]) -> tuple[list[float], list[float]]:
    """Per layer, the root mean square of the weights and of the biases over `networks`."""
    n_layers = len(networks[0].weights)
    sw = [float(np.sqrt(np.mean([np.mean(n.weights[k].astype(np.float64) ** 2) for n in networks])))
          for k in range(n_layers)]
    sb = [float(np.sqrt(np.mean([np.mean(n.biases[k].astype(np.float64) ** 2) for n in networks])))
          for k in range(n_layers)]
    return [max(v, 1e-12) for v in sw], [max(v, 1e-12) for v in sb]


def scale_layers(networks: Sequence[Network], scales: tuple[list[float], list[float]]) -> list[Network]:
    """Divide each layer's weights and biases by the given scalars (see `layer_scales`)."""
    sw, sb = scales
    return [Network(n.spec, [w / np.asarray(s, w.dtype) for w, s in zip(n.weights, sw, strict=True)],
                    [b / np.asarray(s, b.dtype) for b, s in zip(n.biases, sb, strict=True)])
            for n in networks]


class ZooTask(Task):
    """A task on the targets of a run's data (`RunConfig.data`), shared by the two zoo tasks.

    Args:
        cfg: the run.
    """

    zoo_kind: str  # the manifest's target kind this task reads

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def load(self) -> RunData:
        """The three splits as the model sees them (scaled, transformed for the model kind).

        Raises:
            TrainError: the zoo cannot be opened, its target kind is not this task's, or it
                does not fit the model.
        """
        cfg = self.cfg

        splits: dict[str, tuple[list[Network], np.ndarray]] = {}
        for s in SPLITS:
            ds = _open(cfg.data, s)
            n = len(ds) if s != "train" or cfg.max_train is None else min(len(ds), cfg.max_train)
            if n == 0:
                raise TrainError(f"{cfg.zoo}: the {s} split is empty")
            items = [ds[i] for i in range(n)]
            splits[s] = ([a for a, _ in items], np.array([t for _, t in items]))
        self.check(splits)
        raw_train = splits["train"][0]
        scales = layer_scales(raw_train) if cfg.input_scaling == "layer" else None
        if scales is not None:
            splits = {s: (scale_layers(nets, scales), y) for s, (nets, y) in splits.items()}
        prepare = get_model_kind(cfg.model).prepare
        train_batch = None
        if cfg.augment is not None and cfg.augment.active:
            train_batch = self._augmenter(raw_train, scales, prepare)
        return RunData({s: (prepare(nets), y) for s, (nets, y) in splits.items()}, train_batch=train_batch)

    def _augmenter(self, raw: list[Network], scales: tuple[list[float], list[float]] | None,
                   prepare: Callable[[Sequence[Network]], list[Network]]
                   ) -> Callable[[Sequence[int], np.random.Generator], list[Network]]:
        """The step's training networks: each raw network transformed, then scaled and prepared."""
        from ..augment import AugmentError, check_inr, random_similarity, transform_inr

        aug = self.cfg.augment
        assert aug is not None
        try:
            check_inr(raw[0])
        except AugmentError as err:
            raise TrainError(f"{self.cfg.zoo}: {err}") from None

        def batch(idx: Sequence[int], rng: np.random.Generator) -> list[Network]:
            nets = [transform_inr(raw[i], *random_similarity(rng, aug)) for i in idx]
            return prepare(scale_layers(nets, scales) if scales is not None else nets)

        return batch

    def check(self, splits: dict[str, tuple[list[Network], np.ndarray]]) -> None:
        """Refuse a zoo that does not fit the model (architecture, sizes)."""
        cfg = self.cfg
        kind = get_model_kind(cfg.model)
        if kind.family == "graph":
            try:
                cfg.gmn.check_compatible(splits["train"][0][0].spec)
            except ValueError as err:
                raise TrainError(f"{cfg.zoo}: the data does not fit the model: {err}") from None
        else:
            sizes = {n.n_params() for nets, _ in splits.values() for n in nets}
            if len(sizes) > 1:
                raise TrainError(f"{cfg.zoo}: the MLP baseline needs one architecture; the zoo has "
                                 f"networks of {sorted(sizes)} parameters")


class ClassificationTask(ZooTask):
    """Class labels (INR zoos): cross-entropy, accuracy."""

    name, metric, short, zoo_kind = "classification", "accuracy", "acc", "class"
    torch_target_dtype = "int64"

    def check(self, splits: dict[str, tuple[list[Network], np.ndarray]]) -> None:
        """Also: as many outputs as classes."""
        super().check(splits)
        n_classes = int(max(int(y.max()) for _, y in splits.values())) + 1
        if n_classes > self.cfg.gmn.d_out:
            raise TrainError(f"{self.cfg.zoo}: the data has {n_classes} classes but gmn.d_out={self.cfg.gmn.d_out}; "
                             f"set gmn.d_out to at least {n_classes}")

    def torch_loss_sum(self, outputs: Any, targets: Any) -> Any:
        """Summed cross-entropy of the logits `[B, C]` against integer labels `[B]`."""
        import torch

        return torch.nn.functional.cross_entropy(outputs, targets, reduction="sum")

    def torch_values(self, outputs: Any, targets: Any) -> np.ndarray:
        """The predicted classes."""
        return np.asarray(outputs.argmax(1).cpu().numpy())

    def jax_loss(self, outputs: Any, targets: Any) -> Any:
        """Per-example cross-entropy."""
        import optax

        return optax.softmax_cross_entropy_with_integer_labels(outputs, targets)

    def jax_values(self, outputs: Any, targets: Any) -> np.ndarray:
        """The predicted classes."""
        return np.asarray(outputs.argmax(1))

    def score(self, values: np.ndarray, targets: np.ndarray) -> float:
        """Accuracy."""
        return float((values == targets).mean())


class GeneralisationTask(ZooTask):
    """Real targets in `[0, 1]` (a CNN zoo's test accuracies): `MSE(sigmoid(f(G)), y)`, Kendall's tau."""

    name, metric, short, zoo_kind = "regression", "kendall_tau", "tau", "regression"

    def torch_loss_sum(self, outputs: Any, targets: Any) -> Any:
        """Summed squared error of the first output's sigmoid."""
        import torch

        return ((torch.sigmoid(outputs[:, 0]) - targets) ** 2).sum()

    def torch_values(self, outputs: Any, targets: Any) -> np.ndarray:
        """The predicted scores."""
        import torch

        return np.asarray(torch.sigmoid(outputs[:, 0]).cpu().numpy())

    def jax_loss(self, outputs: Any, targets: Any) -> Any:
        """Per-example squared error of the first output's sigmoid."""
        import jax

        return (jax.nn.sigmoid(outputs[:, 0]) - targets) ** 2

    def jax_values(self, outputs: Any, targets: Any) -> np.ndarray:
        """The predicted scores."""
        import jax

        return np.asarray(jax.nn.sigmoid(outputs[:, 0]))

    def score(self, values: np.ndarray, targets: np.ndarray) -> float:
        """Kendall's tau."""
        return kendall_tau(values, targets)


ZOO_TASKS: dict[str, type[ZooTask]] = {"class": ClassificationTask, "regression": GeneralisationTask}


def _open(data: Any, split: str) -> Any:
    """`open_split` with the loaders' errors (a bad file, a missing folder) as a `TrainError`."""
    from ..data import DataSourceError, open_split
    from ..datasets.base import DataError
    from ..zoo.store import ZooError

    try:
        return open_split(data, split)
    except (DataError, DataSourceError, ZooError, OSError) as err:
        raise TrainError(f"{data_label(data)}: cannot read the {split} split: {err}") from None


def zoo_task(cfg: RunConfig) -> ZooTask:
    """The task of a run: from its data's target kind (`target_kind`), which an explicit `cfg.task` must match.

    Raises:
        TrainError: a zoo's manifest cannot be read, or `cfg.task` disagrees with the targets.
    """
    from ..data import ZooData, target_kind
    from ..zoo.store import ZooError

    try:
        kind = target_kind(cfg.data)
    except (ZooError, OSError, ValueError) as err:
        raise TrainError(f"{cfg.zoo}: cannot open the zoo: {err}") from None
    word = "class" if kind == "classification" else "regression"  # a zoo manifest's target kinds
    task = ZOO_TASKS[word](cfg)
    if cfg.task != "auto" and cfg.task != task.name:
        what = "the zoo's targets" if isinstance(cfg.data, ZooData) else f"the {cfg.data.kind} data's targets"
        raise TrainError(f"{cfg.zoo}: task={cfg.task!r} but {what} are {word!r}, a {task.name} task; "
                         f"set task to {task.name!r} or 'auto'")
    return task


# -- INR editing ------------------------------------------------------------------------


class EditingTask(Task):
    """INR editing: the edited SIREN's render against the dilated image, pixel MSE (lower is better).

    Args:
        data: the SIRENs: an INR zoo of grayscale SIRENs of one architecture, or the DWS
            MNIST INRs (a `DataConfig` of kind `zoo` or `dws`; a path is taken as a zoo).
        target: `"source"`, `"render"` or `"auto"` (see `scalegmn.tasks.editing.EditConfig`).
        max_train: use only the first `max_train` train INRs.
        max_eval: use only the first `max_eval` val and test INRs.
        n_examples: test INRs drawn in `editing.png`.
        gmn: the model configuration (checked against the SIRENs).
        images: for DWS MNIST INRs, the folder of the MNIST idx files whose images the INRs
            were fitted to (default: `data.images`); see `scalegmn.tasks.data.edit_targets_source`.
    """

    name, metric, short = "editing", "mse", "mse"
    higher_is_better = False
    keeps_best_model = True

    def __init__(self, data: Any, target: str, max_train: int | None, max_eval: int | None,
                 n_examples: int, gmn: Any, images: str | Path | None = None) -> None:
        from ..data import DwsData, ZooData
        from ..sirens import EditingError, check_siren

        if isinstance(data, (str, Path)):
            data = ZooData(path=Path(data))
        if not isinstance(data, (ZooData, DwsData)):
            raise EditingError(f"{data_label(data)}: INR editing needs grayscale SIRENs (a zoo or dws data), "
                               f"not {data.kind} data")
        self.data, self.zoo = data, data_label(data)
        self.target, self.n_examples, self.gmn = target, n_examples, gmn
        self.images = images if images is not None else getattr(data, "images", None)
        self.limits = {"train": max_train, "val": max_eval, "test": max_eval}
        self.datasets = {s: _open(data, s) for s in SPLITS}
        if isinstance(data, ZooData):
            store = self.datasets["train"].zoo
            if store.manifest.kind != "inr":
                raise EditingError(f"{self.zoo}: INR editing needs an INR zoo; this zoo holds "
                                   f"{store.manifest.kind!r} networks")
            specs = list(store.specs)
            shape = (store.manifest.source or {}).get("image_shape") or [28, 28]
        else:
            if self.images is not None and target == "render":
                raise EditingError(f"images: {self.images} is given but target='render'; remove one of them")
            specs = [sp for ds in self.datasets.values() for sp in ds.specs]
            specs = [sp for i, sp in enumerate(specs) if sp not in specs[:i]]
            shape = [28, 28]  # the DWS MNIST images
        for spec in specs:
            check_siren(spec)
        if len(specs) != 1:
            raise EditingError(f"{self.zoo}: INR editing needs SIRENs of one architecture; the data has {len(specs)}")
        self.spec = specs[0]
        self.height, self.width = int(shape[0]), int(shape[1])
        gmn.check_compatible(self.spec)

    def _source(self) -> tuple[dict[str, np.ndarray] | None, str]:
        """The source image of every INR per split (dataset order), or None and why not."""
        from ..data import DataSourceError, ZooData, edit_targets_source
        from ..sirens import EditingError, source_images

        if isinstance(self.data, ZooData):
            store = self.datasets["train"].zoo
            images, why = source_images(store)
            if images is None:
                return None, why
            if images.shape[1:] != (self.height, self.width):
                raise EditingError(f"{self.zoo}: source images are {images.shape[1:]}, the manifest says "
                                   f"{(self.height, self.width)}")
            return {s: images[np.asarray(ds.columns["group"], dtype=np.int64)] for s, ds in self.datasets.items()}, ""
        if self.images is None:
            return None, ("no MNIST images were given (images: the folder of the MNIST idx files, "
                          "e.g. --set images=FOLDER)")
        try:
            found = edit_targets_source(self.data, self.images, SPLITS, self.datasets)
        except DataSourceError as err:
            raise EditingError(str(err)) from None
        return {s: v for s, v in found.items() if v is not None}, ""

    def load(self) -> RunData:
        """SIRENs and their targets: the dilated source images (or the dilated renders).

        Raises:
            EditingError: `target="source"` and the source cannot be loaded, or its images do
                not have the expected shape, or a split is empty.
        """
        from ..sirens import EditingError, dilate_numpy, render_numpy

        H, W = self.height, self.width
        sources: dict[str, np.ndarray] | None = None
        why = "target='render' was asked for"
        if self.target != "render":
            sources, why = self._source()
            if sources is None and self.target == "source":
                raise EditingError(f"{self.zoo}: cannot build source-image targets: {why}; or set target to "
                                   "'auto' or 'render' to dilate the render of each INR")
            if sources is None:
                warnings.warn(f"{self.zoo}: {why}; the targets are the dilated renders of the SIRENs", stacklevel=3)
        splits: dict[str, tuple[list[Network], np.ndarray]] = {}
        identity: dict[str, float] = {}
        for s, ds in self.datasets.items():
            limit = self.limits[s]
            n = len(ds) if limit is None else min(len(ds), limit)
            if n == 0:
                raise EditingError(f"{self.zoo}: the {s} split is empty")
            nets = ds.networks(np.arange(n))
            render = render_numpy(nets, H, W)
            src = sources[s][:n].astype(np.float64) if sources is not None else render
            if src.shape[1:] != (H, W):
                raise EditingError(f"{self.zoo}: the {s} source images are {src.shape[1:]}, the SIRENs render {(H, W)}")
            target = dilate_numpy(src)
            identity[s] = float(((render - target) ** 2).mean())
            splits[s] = (nets, target.astype(np.float32))
        kind = "source" if sources is not None else "render"
        extras = {"identity_train_mse": identity["train"], "identity_val_mse": identity["val"],
                  "identity_test_mse": identity["test"], "target": kind,
                  "target_note": "" if kind == "source" else why, "image_shape": [H, W],
                  "n_val": len(splits["val"][0]), "n_test": len(splits["test"][0])}
        return RunData(splits, extras)

    def cache_key(self) -> tuple[Any, ...]:
        """The SIREN architecture and the image size fix the compiled renderer."""
        return (type(self).__name__, self.spec.model_dump_json(), self.height, self.width)

    def _torch_render(self, outputs: Any) -> Any:
        from ..sirens import render_sirens

        return render_sirens(outputs, self.spec, self.height, self.width)

    def torch_loss_sum(self, outputs: Any, targets: Any) -> Any:
        """Per-example pixel MSE, summed over the batch."""
        d = self._torch_render(outputs) - targets
        return (d ** 2).mean(dim=(1, 2)).sum()

    def torch_values(self, outputs: Any, targets: Any) -> np.ndarray:
        """Per-example pixel MSE."""
        d = self._torch_render(outputs) - targets
        return np.asarray((d ** 2).mean(dim=(1, 2)).cpu().numpy())

    def _jax_render(self, outputs: Any) -> Any:
        from ..sirens import render_sirens_jax

        node, edge = outputs
        return render_sirens_jax(node, edge, self.spec, self.height, self.width)

    def jax_loss(self, outputs: Any, targets: Any) -> Any:
        """Per-example pixel MSE."""
        return ((self._jax_render(outputs) - targets) ** 2).mean(axis=(1, 2))

    def jax_values(self, outputs: Any, targets: Any) -> np.ndarray:
        """Per-example pixel MSE."""
        return np.asarray(self.jax_loss(outputs, targets))

    def score(self, values: np.ndarray, targets: np.ndarray) -> float:
        """Mean pixel MSE (every image has the same number of pixels)."""
        return float(np.mean(values))

    def finish(self, data: RunData, backend: Any, folder: RunFolder | None) -> dict[str, Any]:
        """The baseline, target and sizes; with a folder also `editing.png` of a few test INRs."""
        extras = dict(data.extras)
        extras["png"] = None
        if folder is not None:
            from ..sirens import plot_edits, render_numpy

            nets, target = data.splits["test"]
            k = min(self.n_examples, len(nets))
            edited = backend.edited_networks(nets[:k])
            inputs = render_numpy(nets[:k], self.height, self.width)
            renders = render_numpy(edited, self.height, self.width)
            if folder.writer:
                extras["png"] = str(plot_edits(inputs, renders, target[:k], folder.path / "editing.png"))
        return extras
