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

Example:
    ```python
    from scalegmn.tasks.editing import EditConfig, train_editing

    r = train_editing("zoos/mnist5k-300", EditConfig(epochs=5))
    print(r["test_mse"], r["identity_test_mse"])
    ```
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator

from scalegmn.weightgraph import DenseLayer, Network, NetworkSpec, ScaleGMNConfig

from .train import LoopConfig

if TYPE_CHECKING:
    from torch import Tensor

    from scalegmn.torch import DenseGraphs


class EditingError(ValueError):
    """Input that INR editing cannot use (not SIRENs, not a grayscale INR zoo, bad shapes)."""


def check_siren(spec: NetworkSpec) -> None:
    """Check that `spec` is a grayscale SIREN: dense layers, 2 inputs, sine hidden layers, linear output.

    Raises:
        EditingError: naming what does not fit.
    """
    layers = spec.layers
    if not all(isinstance(layer, DenseLayer) for layer in layers):
        raise EditingError("INR editing needs SIRENs (dense layers only); this network has conv layers")
    if spec.widths[0] != 2 or spec.widths[-1] != 1:
        raise EditingError(
            f"INR editing needs SIRENs mapping 2 coordinates to 1 grey value; widths are {spec.widths}"
        )
    acts = spec.activations
    if any(a != "sine" for a in acts[:-1]) or acts[-1] != "identity":
        raise EditingError(
            f"INR editing needs SIRENs (sine hidden layers, identity output); activations are {acts}"
        )


def _siren_params(
    batch_or_weights: DenseGraphs | tuple[Sequence[Tensor], Sequence[Tensor]], spec: NetworkSpec | None
) -> tuple[list[Tensor], list[Tensor], NetworkSpec]:
    from scalegmn.torch import DenseGraphs

    if isinstance(batch_or_weights, DenseGraphs):
        b = batch_or_weights
        spec = spec or b.specs[0]
        if any(s != spec for s in b.specs):
            raise EditingError("render_sirens needs SIRENs of one architecture (the batch mixes specs)")
        check_siren(spec)
        if b.d_edge != 1:
            raise EditingError(f"a SIREN graph has edge vectors of length 1, this batch has {b.d_edge}")
        ws = [b.layer_edges(ll)[..., 0] for ll in range(1, b.n_layers + 1)]
        bs = [b.layer_nodes(k)[..., 0] for k in range(1, b.n_layers + 1)]
        return ws, bs, spec
    if not isinstance(batch_or_weights, tuple) or len(batch_or_weights) != 2:
        raise TypeError(
            "render_sirens expects a DenseGraphs batch or a pair (weights, biases) of tensor lists, "
            f"got {type(batch_or_weights).__name__}"
        )
    if spec is None:
        raise EditingError("render_sirens needs the NetworkSpec when given raw (weights, biases)")
    check_siren(spec)
    ws, bs = list(batch_or_weights[0]), list(batch_or_weights[1])
    if len(ws) != spec.n_layers or len(bs) != spec.n_layers:
        raise EditingError(f"the spec has {spec.n_layers} layers; got {len(ws)} weights and {len(bs)} biases")
    for k, (layer, w, bias) in enumerate(zip(spec.layers, ws, bs, strict=True)):
        if tuple(w.shape[1:]) != layer.weight_shape or tuple(bias.shape[1:]) != (layer.n_out,):
            raise EditingError(
                f"layer {k}: weight {tuple(w.shape)} / bias {tuple(bias.shape)} do not fit "
                f"[B, {layer.n_out}, {layer.n_in}] / [B, {layer.n_out}]"
            )
    return ws, bs, spec


def render_sirens(
    batch_or_weights: DenseGraphs | tuple[Sequence[Tensor], Sequence[Tensor]],
    spec: NetworkSpec | None = None,
    height: int = 28,
    width: int = 28,
) -> Tensor:
    """Render a batch of SIRENs of one architecture on the pixel grid (differentiable).

    The weights are read from the tensors directly (no numpy round trip), so gradients flow
    from the pixels to whatever produced them, e.g. the equivariant head's edited graph.
    Hidden layers compute `sin(w0 * (W h + b))`, the output `W h + b + output_offset`,
    exactly as `scalegmn.weightgraph.forward`.

    Args:
        batch_or_weights: a `DenseGraphs` (from `collate`, or the output of a ScaleGMN with
            `head="equivariant"`), or a pair `(weights, biases)` of per-layer tensors
            `[B, out, in]` and `[B, out]`.
        spec: the SIREN's architecture (default: the batch's).
        height: image rows.
        width: image columns.

    Returns:
        `[B, height, width]` images, in the dtype and on the device of the weights.

    Raises:
        EditingError: if the networks are not grayscale SIRENs of one architecture.
        TypeError: for an input that is neither a batch nor a `(weights, biases)` pair.
    """
    import torch

    from .zoo.siren import coordinate_grid

    ws, bs, spec = _siren_params(batch_or_weights, spec)
    coords = coordinate_grid(height, width, ws[0].dtype).to(ws[0].device)
    h = coords.expand(ws[0].shape[0], -1, -1)
    for k, (layer, w, b) in enumerate(zip(spec.layers, ws, bs, strict=True)):
        h = h @ w.transpose(1, 2) + b.unsqueeze(1)
        if k < spec.n_layers - 1:
            h = torch.sin(layer.w0 * h)
    out = h[..., 0] + spec.output_offset
    return out.reshape(-1, height, width)


def dilate(images: Tensor) -> Tensor:
    """Grey dilation with a 3x3 ones kernel, one iteration: a 3x3 max filter.

    Equal to `scipy.ndimage.grey_dilation(image, size=(3, 3))` (border pixels take the
    maximum over their in-image neighbours).

    Args:
        images: `[B, H, W]` or `[H, W]`.

    Returns:
        The dilated images, same shape.
    """
    import torch.nn.functional as F

    if images.ndim not in (2, 3):
        raise EditingError(f"dilate expects [B, H, W] or [H, W] images, got shape {tuple(images.shape)}")
    x = images if images.ndim == 3 else images.unsqueeze(0)
    y = F.max_pool2d(x.unsqueeze(1), kernel_size=3, stride=1, padding=1).squeeze(1)
    return y if images.ndim == 3 else y[0]


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
    `batch_size`, `epochs`, `seed`, `max_train`) are those of `LoopConfig`.
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


def _source_digest(images: NDArray, labels: NDArray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def source_images(zoo: Any) -> tuple[NDArray[np.float32] | None, str]:
    """The float images in `[0, 1]` of the source an INR zoo was built from, if loadable.

    Args:
        zoo: an opened `scalegmn.tasks.zoo.Zoo`.

    Returns:
        `(images, why)`: `images` `(n_images, H, W)` or None, and a reason when None.
    """
    from .sources import SourceError, load_source

    info = zoo.manifest.source or {}
    name = info.get("name")
    if "group" not in zoo.columns:
        return None, "the zoo does not record the image index of its INRs (no 'group' column)"
    if not name:
        return None, "the zoo's manifest does not name its source"
    try:
        src = load_source(str(name))
    except SourceError as err:
        return None, f"source {name!r} cannot be loaded again ({err})"
    if info.get("sha256") and _source_digest(src.images, src.labels) != info["sha256"]:
        return None, f"source {name!r} no longer matches the checksum recorded in the zoo"
    return src.as_float(), ""


def _load_split(ds: Any, limit: int | None) -> tuple[list[Network], NDArray[np.int64]]:
    n = len(ds) if limit is None else min(len(ds), limit)
    nets = ds.networks(np.arange(n))
    image_index = np.asarray(ds.columns["group"][:n], dtype=np.int64) if "group" in ds.columns else None
    return nets, (image_index if image_index is not None else np.full(n, -1, np.int64))


def _subset(batch: DenseGraphs, idx: NDArray[np.int64]) -> DenseGraphs:
    import dataclasses

    import torch

    t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
    return dataclasses.replace(
        batch,
        node_features=batch.node_features[t],
        edge_features=batch.edge_features[t],
        node_group=batch.node_group[t],
        specs=tuple(batch.specs[int(i)] for i in idx),
    )


def _atomic_savefig(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def plot_edits(inputs: NDArray, edited: NDArray, targets: NDArray, path: str | os.PathLike[str]) -> Path:
    """Write a PNG with rows input render / edited render / target, one column per INR.

    The file is written to a temporary name and moved into place, so readers never see a
    partial image.

    Args:
        inputs: `[n, H, W]` renders of the input SIRENs.
        edited: `[n, H, W]` renders of the edited SIRENs.
        targets: `[n, H, W]` dilated targets.
        path: the PNG to write.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(inputs)
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.2), squeeze=False)
    for r, (name, imgs) in enumerate((("input", inputs), ("edited", edited), ("target", targets))):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(np.clip(imgs[c], 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
    fig.tight_layout()
    out = Path(path)
    try:
        _atomic_savefig(fig, out)
    finally:
        plt.close(fig)
    return out


def train_editing(
    zoo: str | os.PathLike[str],
    config: EditConfig | None = None,
    progress: bool = True,
    *,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train a ScaleGMN to dilate the images of an INR zoo's SIRENs (method section 5).

    AdamW with linear warm-up then a constant learning rate, gradient clipping, model
    selection on the validation MSE; the test MSE is measured at the best validation epoch.
    Beside it the identity edit (the unedited SIREN's render against the same target) is
    reported on every split: the model has learnt something only if it is below that.

    Args:
        zoo: an INR zoo folder (`scalegmn zoo build inr ...`) of grayscale SIRENs.
        config: the run (default `EditConfig()`).
        progress: show a progress bar.
        out: a folder for `editing.png` (input / edited / target of a few test INRs) and
            `metrics.jsonl` (one line per epoch); nothing is written without it.

    Returns:
        A dict with `best_epoch`, `val_mse`, `test_mse`, `identity_val_mse`,
        `identity_test_mse`, `target` (`"source"` or `"render"`), `image_shape`,
        `n_train`, `n_val`, `n_test`, `n_params_model`, `seconds`, `history`
        (per epoch: `loss`, `val_mse`, `seconds`), `png` (or None) and `model` (the
        ScaleGMN with the parameters of the best validation epoch).

    Raises:
        EditingError: if the zoo is not a zoo of grayscale SIRENs, or `target="source"` and
            the source images cannot be found.
    """
    import torch
    from rich.progress import Progress

    from scalegmn.torch import DenseGraphs, ScaleGMN, collate

    from .datasets import open_zoo

    cfg = config or EditConfig()
    splits = {s: open_zoo(zoo, s) for s in ("train", "val", "test")}
    store = splits["train"].zoo
    if store.manifest.kind != "inr":
        raise EditingError(f"{zoo}: INR editing needs an INR zoo; this zoo holds {store.manifest.kind!r} networks")
    for spec in store.specs:
        check_siren(spec)
    if len(store.specs) != 1:
        raise EditingError(f"{zoo}: INR editing needs SIRENs of one architecture; the zoo has {len(store.specs)}")
    spec = store.specs[0]
    shape = (store.manifest.source or {}).get("image_shape") or [28, 28]
    H, W = int(shape[0]), int(shape[1])

    images: NDArray[np.float32] | None = None
    why = "target='render' was asked for"
    if cfg.target != "render":
        images, why = source_images(store)
        if images is None and cfg.target == "source":
            raise EditingError(f"{zoo}: cannot build source-image targets: {why}")
        if images is None:
            warnings.warn(f"{zoo}: {why}; the targets are the dilated renders of the SIRENs", stacklevel=2)
        elif images.shape[1:] != (H, W):
            raise EditingError(f"{zoo}: source images are {images.shape[1:]}, the manifest says {(H, W)}")
    target_kind = "source" if images is not None else "render"

    cfg.gmn.check_compatible(spec)
    limits = {"train": cfg.max_train, "val": cfg.max_eval, "test": cfg.max_eval}
    data: dict[str, tuple[DenseGraphs, Tensor, Tensor]] = {}
    for s, ds in splits.items():
        nets, img_idx = _load_split(ds, limits[s])
        if not nets:
            raise EditingError(f"{zoo}: the {s} split is empty")
        batch = collate(nets, torch.float32, dense=True)
        assert isinstance(batch, DenseGraphs)
        with torch.no_grad():
            render = torch.cat([render_sirens(_subset(batch, np.arange(i, min(i + 256, len(nets)))), spec, H, W)
                                for i in range(0, len(nets), 256)])
        src = torch.from_numpy(images[img_idx]) if images is not None else render
        data[s] = (batch, render, dilate(src))

    torch.manual_seed(cfg.seed)
    model = ScaleGMN(cfg.gmn)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1)))
    rng = np.random.default_rng(cfg.seed)

    def edited_render(xb: DenseGraphs) -> Tensor:
        y = model(xb)
        assert isinstance(y, DenseGraphs)
        return render_sirens(y, spec, H, W)

    def evaluate(split: str) -> float:
        batch, _, target = data[split]
        model.eval()
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(batch), 256):
                idx = np.arange(i, min(i + 256, len(batch)))
                total += float(((edited_render(_subset(batch, idx)) - target[idx]) ** 2).sum())
        return total / (len(batch) * H * W)

    identity = {s: float(((r - t) ** 2).mean()) for s, (_, r, t) in data.items()}
    train_batch, _, train_target = data["train"]
    n_train = len(train_batch)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_mse": math.inf, "test_mse": math.nan, "best_epoch": -1}
    best_state = copy.deepcopy(model.state_dict())
    out_dir = Path(out) if out is not None else None
    log = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        log = (out_dir / "metrics.jsonl").open("a")
    t0 = time.perf_counter()
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("editing", total=cfg.epochs * steps_per_epoch)
            for epoch in range(cfg.epochs):
                model.train()
                order = rng.permutation(n_train)
                losses = []
                for k in range(steps_per_epoch):
                    idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                    pred = edited_render(_subset(train_batch, idx))
                    loss = torch.nn.functional.mse_loss(pred, train_target[torch.from_numpy(idx)])
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"epoch {epoch} step {k}: the editing loss is {loss.item()}")
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                    sched.step()
                    losses.append(loss.item())
                    bar.advance(task)
                row = {"epoch": epoch, "loss": float(np.mean(losses)), "val_mse": evaluate("val"),
                       "seconds": time.perf_counter() - t0}
                if row["val_mse"] < best["val_mse"]:
                    best = {"val_mse": row["val_mse"], "test_mse": evaluate("test"), "best_epoch": epoch}
                    best_state = copy.deepcopy(model.state_dict())
                history.append(row)
                if log is not None:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
    finally:
        if log is not None:
            log.close()
    seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    png = None
    if out_dir is not None:
        test_batch, test_render, test_target = data["test"]
        idx = np.arange(min(cfg.n_examples, len(test_batch)))
        model.eval()
        with torch.no_grad():
            edited = edited_render(_subset(test_batch, idx)).numpy()
        png = str(plot_edits(test_render[idx].numpy(), edited, test_target[idx].numpy(), out_dir / "editing.png"))
    return {
        **best,
        "identity_train_mse": identity["train"], "identity_val_mse": identity["val"],
        "identity_test_mse": identity["test"], "target": target_kind,
        "target_note": "" if target_kind == "source" else why,
        "image_shape": [H, W], "n_train": n_train, "n_val": len(data["val"][0]),
        "n_test": len(data["test"][0]), "n_params_model": sum(p.numel() for p in model.parameters()),
        "seconds": seconds, "history": history, "png": png, "model": model,
    }
