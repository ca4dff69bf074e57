"""SIRENs for INR editing: the check, the differentiable renderer (torch and JAX), the
dilation target, and the source images an INR zoo was fitted to.

Kept apart from the training entry point (`scalegmn.tasks.editing`) so that the editing
task of the run protocol (`scalegmn.tasks.run.tasks.EditingTask`) uses them without an
import cycle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph import DenseLayer, Network, NetworkSpec, forward, layout

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
    if info.get("sha256") and src.sha256() != info["sha256"]:
        return None, f"source {name!r} no longer matches the checksum recorded in the zoo"
    return src.as_float(), ""


def pixel_grid(height: int, width: int) -> NDArray[np.float64]:
    """Pixel coordinates in `[-1, 1]^2`, row-major `(y_r, x_c)`: `[H*W, 2]` (as `coordinate_grid`)."""
    gy, gx = np.meshgrid(np.linspace(-1.0, 1.0, height), np.linspace(-1.0, 1.0, width), indexing="ij")
    return np.stack([gy.reshape(-1), gx.reshape(-1)], axis=-1)


def render_numpy(networks: Sequence[Network], height: int, width: int) -> NDArray[np.float64]:
    """Render SIRENs with the numpy reference forward pass (float64): `[B, height, width]`."""
    grid = pixel_grid(height, width)
    return np.stack([forward(n.astype(np.float64), grid)[:, 0].reshape(height, width) for n in networks])


def dilate_numpy(images: NDArray) -> NDArray:
    """`dilate` in numpy (`scipy.ndimage.grey_dilation`, size 3x3) of `[B, H, W]` images."""
    from scipy.ndimage import grey_dilation

    return np.stack([grey_dilation(a, size=(3, 3)) for a in images]).astype(images.dtype)


def render_sirens_jax(node_features: Any, edge_features: Any, spec: NetworkSpec, height: int = 28,
                      width: int = 28) -> Any:
    """Render a dense JAX batch of SIRENs of one architecture from its graph features (differentiable).

    The JAX counterpart of `render_sirens`, for the edited graph of a JAX ScaleGMN with the
    equivariant head.

    Args:
        node_features: `[B, N, 1]` (biases on the non-input nodes).
        edge_features: `[B, E, 1]` (weights, in layer blocks, target-major).
        spec: the SIREN's architecture.
        height: image rows.
        width: image columns.

    Returns:
        `[B, height, width]` images in the features' dtype.
    """
    import jax.numpy as jnp

    check_siren(spec)
    lay = layout(spec)
    w_, no, eo = lay.widths, lay.node_offsets, lay.edge_offsets
    B = node_features.shape[0]
    h = jnp.broadcast_to(jnp.asarray(pixel_grid(height, width), node_features.dtype), (B, height * width, 2))
    for k, layer in enumerate(spec.layers):
        w = edge_features[:, int(eo[k]):int(eo[k + 1]), 0].reshape(B, w_[k + 1], w_[k])
        b = node_features[:, int(no[k + 1]):int(no[k + 2]), 0]
        h = jnp.einsum("bpi,boi->bpo", h, w) + b[:, None, :]
        if k < spec.n_layers - 1:
            h = jnp.sin(layer.w0 * h)
    return (h[..., 0] + spec.output_offset).reshape(B, height, width)


def plot_edits(inputs: NDArray, edited: NDArray, targets: NDArray, path: str | os.PathLike[str]) -> Path:
    """Write a PNG with rows input render / edited render / target, one column per INR.

    The file is written atomically (`scalegmn.weightgraph.io.atomic_write`), so readers never
    see a partial image.

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

    from scalegmn.weightgraph.io import atomic_write

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
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"), to_path=True)
    finally:
        plt.close(fig)
