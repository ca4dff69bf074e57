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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scalegmn.weightgraph import Network

from .config import RunConfig, TrainError
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
    """

    splits: dict[str, tuple[list[Network], np.ndarray]]
    extras: dict[str, Any] = field(default_factory=dict)

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
    """A task on the targets a zoo records (`RunConfig.zoo`), shared by the two zoo tasks.

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
        from ..datasets import open_zoo

        splits: dict[str, tuple[list[Network], np.ndarray]] = {}
        for s in SPLITS:
            ds = open_zoo(cfg.zoo, s)
            n = len(ds) if s != "train" or cfg.max_train is None else min(len(ds), cfg.max_train)
            if n == 0:
                raise TrainError(f"{cfg.zoo}: the {s} split is empty")
            items = [ds[i] for i in range(n)]
            splits[s] = ([a for a, _ in items], np.array([t for _, t in items]))
        self.check(splits)
        if cfg.input_scaling == "layer":
            scales = layer_scales(splits["train"][0])
            splits = {s: (scale_layers(nets, scales), y) for s, (nets, y) in splits.items()}
        prepare = get_model_kind(cfg.model).prepare
        return RunData({s: (prepare(nets), y) for s, (nets, y) in splits.items()})

    def check(self, splits: dict[str, tuple[list[Network], np.ndarray]]) -> None:
        """Refuse a zoo that does not fit the model (architecture, sizes)."""
        cfg = self.cfg
        kind = get_model_kind(cfg.model)
        if kind.family == "graph":
            try:
                cfg.gmn.check_compatible(splits["train"][0][0].spec)
            except ValueError as err:
                raise TrainError(f"{cfg.zoo}: the zoo does not fit the model: {err}") from None
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
            raise TrainError(f"{self.cfg.zoo}: the zoo has {n_classes} classes but gmn.d_out={self.cfg.gmn.d_out}; "
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


def zoo_task(cfg: RunConfig) -> ZooTask:
    """The task of a zoo run: from the zoo's target kind, which an explicit `cfg.task` must match.

    Raises:
        TrainError: the zoo cannot be opened, or `cfg.task` disagrees with its targets.
    """
    from ..zoo.store import Zoo, ZooError

    try:
        zoo = Zoo(cfg.zoo)
    except (ZooError, OSError, ValueError) as err:
        raise TrainError(f"{cfg.zoo}: cannot open the zoo: {err}") from None
    kind = zoo.manifest.target.kind
    task = ZOO_TASKS[kind](cfg)
    if cfg.task != "auto" and cfg.task != task.name:
        raise TrainError(f"{cfg.zoo}: task={cfg.task!r} but the zoo's targets are {kind!r} "
                         f"({zoo.manifest.target.name}), a {task.name} task; set task to "
                         f"{task.name!r} or 'auto'")
    return task


# -- INR editing ------------------------------------------------------------------------


class EditingTask(Task):
    """INR editing: the edited SIREN's render against the dilated image, pixel MSE (lower is better).

    Args:
        zoo: an INR zoo of grayscale SIRENs of one architecture.
        target: `"source"`, `"render"` or `"auto"` (see `scalegmn.tasks.editing.EditConfig`).
        max_train: use only the first `max_train` train INRs.
        max_eval: use only the first `max_eval` val and test INRs.
        n_examples: test INRs drawn in `editing.png`.
        gmn: the model configuration (checked against the SIRENs).
    """

    name, metric, short = "editing", "mse", "mse"
    higher_is_better = False
    keeps_best_model = True

    def __init__(self, zoo: str, target: str, max_train: int | None, max_eval: int | None,
                 n_examples: int, gmn: Any) -> None:
        from ..datasets import open_zoo
        from ..sirens import EditingError, check_siren

        self.zoo, self.target, self.n_examples, self.gmn = zoo, target, n_examples, gmn
        self.limits = {"train": max_train, "val": max_eval, "test": max_eval}
        self.datasets = {s: open_zoo(zoo, s) for s in SPLITS}
        store = self.datasets["train"].zoo
        if store.manifest.kind != "inr":
            raise EditingError(f"{zoo}: INR editing needs an INR zoo; this zoo holds {store.manifest.kind!r} networks")
        for spec in store.specs:
            check_siren(spec)
        if len(store.specs) != 1:
            raise EditingError(f"{zoo}: INR editing needs SIRENs of one architecture; the zoo has {len(store.specs)}")
        self.spec = store.specs[0]
        shape = (store.manifest.source or {}).get("image_shape") or [28, 28]
        self.height, self.width = int(shape[0]), int(shape[1])
        gmn.check_compatible(self.spec)

    def load(self) -> RunData:
        """SIRENs and their targets: the dilated source images (or the dilated renders).

        Raises:
            EditingError: `target="source"` and the source cannot be loaded, or its images do
                not have the manifest's shape, or a split is empty.
        """
        from ..sirens import EditingError, dilate_numpy, render_numpy, source_images

        H, W = self.height, self.width
        store = self.datasets["train"].zoo
        images = None
        why = "target='render' was asked for"
        if self.target != "render":
            images, why = source_images(store)
            if images is None and self.target == "source":
                raise EditingError(f"{self.zoo}: cannot build source-image targets: {why}")
            if images is None:
                warnings.warn(f"{self.zoo}: {why}; the targets are the dilated renders of the SIRENs", stacklevel=3)
            elif images.shape[1:] != (H, W):
                raise EditingError(f"{self.zoo}: source images are {images.shape[1:]}, the manifest says {(H, W)}")
        splits: dict[str, tuple[list[Network], np.ndarray]] = {}
        identity: dict[str, float] = {}
        for s, ds in self.datasets.items():
            limit = self.limits[s]
            n = len(ds) if limit is None else min(len(ds), limit)
            if n == 0:
                raise EditingError(f"{self.zoo}: the {s} split is empty")
            nets = ds.networks(np.arange(n))
            render = render_numpy(nets, H, W)
            if images is not None:
                src = images[np.asarray(ds.columns["group"][:n], dtype=np.int64)].astype(np.float64)
            else:
                src = render
            target = dilate_numpy(src)
            identity[s] = float(((render - target) ** 2).mean())
            splits[s] = (nets, target.astype(np.float32))
        kind = "source" if images is not None else "render"
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
