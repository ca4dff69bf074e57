"""Fitting many SIRENs at once: stacked weights, batched matmuls, hand-written gradients.

B networks of one architecture are stored as stacked tensors: weight `W_l` `(B, in, out)`
and bias `b_l` `(B, out)`. The loss is the sum over networks of each network's mean squared
error, so the gradient with respect to network b's parameters is the gradient of its own
loss, and Adam (elementwise) makes exactly the update a separate fit would make. The
backward pass is written out by hand (no autograd graph), which is what makes a CPU fit
cheap; `compile=True` additionally fuses it with `torch.compile`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from scalegmn.weightgraph import Network, NetworkSpec


def coordinate_grid(height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Pixel coordinates in `[-1, 1]^2`, row-major: pixel `(r, c)` -> `(y_r, x_c)`. Shape `(H*W, 2)`."""
    ys = torch.linspace(-1.0, 1.0, height, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gy.reshape(-1), gx.reshape(-1)], dim=-1)


def siren_init(
    widths: tuple[int, ...], w0: float, rng: np.random.Generator
) -> tuple[list[NDArray[np.float64]], list[NDArray[np.float64]]]:
    """The SIREN initialisation of one network, in PyTorch layout.

    First layer `U(-1/n_in, 1/n_in)`, later layers `U(-sqrt(6/n_in)/w0, +sqrt(6/n_in)/w0)`,
    biases `U(-1/sqrt(n_in), 1/sqrt(n_in))` (PyTorch's `nn.Linear` default).

    Returns:
        `(weights, biases)`: weight `(out, in)` and bias `(out,)` per layer.
    """
    ws, bs = [], []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        bound = 1.0 / n_in if i == 0 else math.sqrt(6.0 / n_in) / w0
        ws.append(rng.uniform(-bound, bound, size=(n_out, n_in)))
        bb = 1.0 / math.sqrt(n_in)
        bs.append(rng.uniform(-bb, bb, size=n_out))
    return ws, bs


def _step(
    params: list[Tensor], m: list[Tensor], v: list[Tensor], t: Tensor, coords: Tensor,
    target: Tensor, w0: float, offset: float, lr: float, beta1: float, beta2: float, eps: float,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor]:
    """One Adam step on every network; returns new params, moments, and the pre-step MSEs."""
    n_layers = len(params) // 2
    acts: list[Tensor] = [coords]
    derivs: list[Tensor] = []
    h = coords
    for layer in range(n_layers):
        w, b = params[2 * layer], params[2 * layer + 1]
        z = torch.matmul(h, w).add_(b.unsqueeze(1))  # in place: fewer passes over activations
        if layer < n_layers - 1:
            z.mul_(w0)
            h = torch.sin(z)
            derivs.append(torch.cos(z).mul_(w0))
        else:
            h = z
        acts.append(h)
    diff = h.add_(offset).sub_(target)
    per_net = diff.shape[1] * diff.shape[2]
    mse = (diff * diff).sum(dim=(1, 2)) / per_net
    g = diff.mul_(2.0 / per_net)
    grads: list[Tensor] = [g] * (2 * n_layers)
    for layer in range(n_layers - 1, -1, -1):
        a = acts[layer]
        grads[2 * layer] = torch.matmul(a.transpose(-1, -2), g)
        grads[2 * layer + 1] = g.sum(dim=1)
        if layer > 0:
            g = torch.matmul(g, params[2 * layer].transpose(1, 2)).mul_(derivs[layer - 1])
    bc1 = 1.0 - beta1**t
    bc2 = 1.0 - beta2**t
    new_p, new_m, new_v = [], [], []
    for p, gr, mm, vv in zip(params, grads, m, v, strict=True):
        mm = torch.lerp(mm, gr, 1.0 - beta1)
        vv = vv * beta2 + gr * gr * (1.0 - beta2)
        denom = (vv.sqrt() / bc2.sqrt()) + eps
        new_p.append(p - (lr / bc1) * mm / denom)
        new_m.append(mm)
        new_v.append(vv)
    return new_p, new_m, new_v, mse


_COMPILED: dict[str, Callable] = {}


def _compiled_step() -> Callable:
    fn = _COMPILED.get("step")
    if fn is None:
        fn = torch.compile(_step, dynamic=False)
        _COMPILED["step"] = fn
    return fn


@dataclass
class FitResult:
    """Fitted SIRENs.

    Attributes:
        weights: per layer `(B, out, in)` float arrays (PyTorch layout).
        biases: per layer `(B, out)`.
        mse: `(B,)` final mean squared error of each network (pixel values in `[0, 1]`).
    """

    weights: list[NDArray]
    biases: list[NDArray]
    mse: NDArray

    @property
    def psnr(self) -> NDArray:
        """`(B,)` PSNR in dB for pixel range 1: `10 log10(1 / mse)`."""
        return 10.0 * np.log10(1.0 / np.maximum(self.mse, 1e-30))

    def networks(self, spec: NetworkSpec) -> list[Network]:
        """The fitted networks as `Network`s of `spec`."""
        return [
            Network(spec, [w[k] for w in self.weights], [b[k] for b in self.biases])
            for k in range(len(self.mse))
        ]


def fit_sirens(
    images: NDArray,
    init_weights: list[NDArray],
    init_biases: list[NDArray],
    steps: int,
    w0: float = 30.0,
    output_offset: float = 0.5,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
) -> FitResult:
    """Fit B SIRENs, network b to image b, with full-batch Adam on the pixel MSE.

    Args:
        images: `(B, H, W)` or `(B, H, W, C)` targets in `[0, 1]`.
        init_weights: per layer `(B, out, in)` initial weights (PyTorch layout).
        init_biases: per layer `(B, out)`.
        steps: Adam steps.
        w0: SIREN frequency of the hidden sine layers.
        output_offset: added to the output (the DWS INRs use 0.5).
        lr, betas, eps: Adam's options (as `torch.optim.Adam`).
        dtype: float32 (fast) or float64 (exact comparisons).
        compile: fuse the step with `torch.compile`.

    Returns:
        A `FitResult` with the final parameters and each network's final MSE.
    """
    imgs = torch.as_tensor(np.asarray(images), dtype=dtype)
    if imgs.ndim == 3:
        imgs = imgs.unsqueeze(-1)
    B, H, W, C = imgs.shape
    target = imgs.reshape(B, H * W, C)
    coords = coordinate_grid(H, W, dtype)
    if init_weights[0].shape[-1] != 2 or init_weights[-1].shape[1] != C:
        raise ValueError(
            f"SIRENs map 2 coordinates to {C} channel(s); got first weight {init_weights[0].shape} "
            f"and last weight {init_weights[-1].shape}"
        )
    params: list[Tensor] = []
    for w, b in zip(init_weights, init_biases, strict=True):
        params.append(torch.as_tensor(np.asarray(w), dtype=dtype).transpose(1, 2).contiguous())
        params.append(torch.as_tensor(np.asarray(b), dtype=dtype).contiguous())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    fn = _compiled_step() if compile else _step
    for k in range(steps):
        t = torch.tensor(float(k + 1), dtype=dtype)
        params, m, v, _ = fn(params, m, v, t, coords, target, w0, output_offset, lr, betas[0], betas[1], eps)
    with torch.no_grad():
        h = coords
        n_layers = len(params) // 2
        for layer in range(n_layers):
            h = torch.matmul(h, params[2 * layer]) + params[2 * layer + 1].unsqueeze(1)
            if layer < n_layers - 1:
                h = torch.sin(w0 * h)
        mse = ((h + output_offset - target) ** 2).mean(dim=(1, 2))
    return FitResult(
        weights=[params[2 * i].transpose(1, 2).contiguous().numpy() for i in range(n_layers)],
        biases=[params[2 * i + 1].numpy().copy() for i in range(n_layers)],
        mse=mse.numpy().astype(np.float64),
    )
