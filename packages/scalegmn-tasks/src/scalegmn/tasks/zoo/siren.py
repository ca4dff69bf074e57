"""Fitting many SIRENs at once: stacked weights, batched matmuls, hand-written gradients.

B networks of one architecture are stored as stacked tensors: weight `W_l` `(B, in, out)`
and bias `b_l` `(B, out)`. The loss is the sum over networks of each network's mean squared
error, so the gradient with respect to network b's parameters is the gradient of its own
loss, and Adam (elementwise) makes exactly the update a separate fit would make. The
backward pass is written out by hand (no autograd graph), which is what makes a CPU fit
cheap; `compile=True` additionally fuses it with `torch.compile` (the narrow first and last
layers then become broadcast sums that fuse with the sines, and fewer networks per step keep
the activations in the core's cache: `INRZooOptions.batch_size`).

With `batch_size` below the number of networks, the stacked tensors are slots: a network
that is done (it reached the PSNR threshold, or ran every step) leaves its slot to the next
pending network, so the step keeps one shape and stays compiled. Once nothing is pending,
the slots still busy are gathered into the smallest of a few bucketed sizes (halvings of
`batch_size`), which bounds the number of compiled shapes and the work wasted on idle slots.
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


def dws_init(
    widths: tuple[int, ...], w0: float, rng: np.random.Generator
) -> tuple[list[NDArray[np.float64]], list[NDArray[np.float64]]]:
    """The initialisation of the published DWS INRs (DWSNets `nn/inr.py`), in PyTorch layout.

    Every sine layer, the first included, `U(-sqrt(6/n_in)/w0, +sqrt(6/n_in)/w0)` weights and
    zero biases; the last (linear) layer PyTorch's `nn.Linear` default, i.e. kaiming-uniform
    with `a = sqrt(5)` weights (`U(+-1/sqrt(n_in))`) and `U(+-1/sqrt(n_in))` biases.

    Args:
        widths: layer widths `(2, ..., out)`.
        w0: sine frequency.
        rng: the network's generator.

    Returns:
        `(weights, biases)`: weight `(out, in)` and bias `(out,)` per layer.
    """
    ws, bs = [], []
    n_layers = len(widths) - 1
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        if i < n_layers - 1:
            bound = math.sqrt(6.0 / n_in) / w0
            ws.append(rng.uniform(-bound, bound, size=(n_out, n_in)))
            bs.append(np.zeros(n_out))
        else:
            bound = 1.0 / math.sqrt(n_in)
            ws.append(rng.uniform(-bound, bound, size=(n_out, n_in)))
            bs.append(rng.uniform(-bound, bound, size=n_out))
    return ws, bs


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


# Under torch.compile, layers this narrow (the 2 coordinates in, the 1-3 channels out) are
# sums of broadcast products rather than matmuls: a batched matmul with an inner or outer size
# of 1-3 runs far below the machine's rate, and as sums the compiled step fuses them with the
# sines around them. Eager, the matmuls are faster (no large temporaries).
_NARROW = 4


def _narrow(n: int) -> bool:
    return n <= _NARROW and torch.compiler.is_compiling()


def _affine(h: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """`h @ w + b` for `h` `(B or 1, P, n_in)`, `w` `(B, n_in, n_out)`, `b` `(B, n_out)`."""
    n_in, n_out = w.shape[1], w.shape[2]
    if _narrow(n_in):
        z = b.unsqueeze(1)
        for i in range(n_in):
            z = z + h[..., i:i + 1] * w[:, i:i + 1, :]
        return z
    if _narrow(n_out):
        cols = [(h * w[:, :, j].unsqueeze(1)).sum(-1, keepdim=True) for j in range(n_out)]
        return torch.cat(cols, -1) + b.unsqueeze(1)
    return torch.matmul(h, w) + b.unsqueeze(1)


def _weight_grad(a: Tensor, g: Tensor) -> Tensor:
    """`a^T @ g` per network, summed over pixels: `(B, n_in, n_out)`."""
    n_in, n_out = a.shape[-1], g.shape[-1]
    if _narrow(n_in):
        return torch.stack([(a[..., i:i + 1] * g).sum(1) for i in range(n_in)], 1)
    if _narrow(n_out):
        return torch.stack([(a * g[..., j:j + 1]).sum(1) for j in range(n_out)], -1)
    return torch.matmul(a.transpose(-1, -2), g)


def _input_grad(g: Tensor, w: Tensor) -> Tensor:
    """`g @ w^T`: the gradient with respect to the layer's input, `(B, P, n_in)`."""
    n_out = w.shape[2]
    if _narrow(n_out):
        z = g[..., 0:1] * w[:, :, 0].unsqueeze(1)
        for j in range(1, n_out):
            z = z + g[..., j:j + 1] * w[:, :, j].unsqueeze(1)
        return z
    return torch.matmul(g, w.transpose(1, 2))


def _step(
    params: list[Tensor], m: list[Tensor], v: list[Tensor], t: Tensor, coords: Tensor,
    target: Tensor, w0: float, offset: float, lr: float, beta1: float, beta2: float, eps: float,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor]:
    """One Adam step on every network; returns new params, moments, and the pre-step MSEs.

    `t` is `(B,)`: each network's own step number (networks join the batch at different times).
    """
    n_layers = len(params) // 2
    B = target.shape[0]
    acts: list[Tensor] = [coords.unsqueeze(0)]
    derivs: list[Tensor] = []
    h = acts[0]
    for layer in range(n_layers):
        z = _affine(h, params[2 * layer], params[2 * layer + 1])
        if layer < n_layers - 1:
            z = z * w0
            h = torch.sin(z)
            derivs.append(torch.cos(z) * w0)
        else:
            h = z
        acts.append(h)
    diff = h + offset - target
    per_net = diff.shape[1] * diff.shape[2]
    mse = (diff * diff).sum(dim=(1, 2)) / per_net
    g = diff * (2.0 / per_net)
    grads: list[Tensor] = [g] * (2 * n_layers)
    for layer in range(n_layers - 1, -1, -1):
        grads[2 * layer] = _weight_grad(acts[layer] if layer else acts[0].expand(B, -1, -1), g)
        grads[2 * layer + 1] = g.sum(dim=1)
        if layer > 0:
            g = _input_grad(g, params[2 * layer]) * derivs[layer - 1]
    bc1 = 1.0 - beta1**t
    bc2 = 1.0 - beta2**t
    new_p, new_m, new_v = [], [], []
    for p, gr, mm, vv in zip(params, grads, m, v, strict=True):
        shape = (-1,) + (1,) * (p.ndim - 1)
        mm = torch.lerp(mm, gr, 1.0 - beta1)
        vv = vv * beta2 + gr * gr * (1.0 - beta2)
        denom = (vv.sqrt() / bc2.sqrt().view(shape)) + eps
        new_p.append(p - (lr / bc1).view(shape) * mm / denom)
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
        mse: `(B,)` mean squared error of each network's kept parameters (pixels in `[0, 1]`).
        steps: `(B,)` Adam steps taken before the kept parameters (the stopping step, or
            every step).
        stopped: `(B,)` True where the network reached the PSNR threshold (early stop).
    """

    weights: list[NDArray]
    biases: list[NDArray]
    mse: NDArray
    steps: NDArray
    stopped: NDArray

    @property
    def psnr(self) -> NDArray:
        """`(B,)` PSNR in dB for pixel range 1: `10 log10(1 / mse)`."""
        return psnr_from_mse(self.mse)

    def networks(self, spec: NetworkSpec) -> list[Network]:
        """The fitted networks as `Network`s of `spec`."""
        return [
            Network(spec, [w[k] for w in self.weights], [b[k] for b in self.biases])
            for k in range(len(self.mse))
        ]


def psnr_from_mse(mse: NDArray) -> NDArray:
    """PSNR in dB for pixel range 1, `10 log10(1 / mse)`, elementwise."""
    return 10.0 * np.log10(1.0 / np.maximum(np.asarray(mse, np.float64), 1e-30))


def _buckets(batch: int) -> list[int]:
    sizes = [batch]
    while sizes[-1] > 1:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes[::-1]  # ascending


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
    psnr_stop: float | None = None,
    batch_size: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> FitResult:
    """Fit N SIRENs, network b to image b, with full-batch Adam on the pixel MSE.

    Each network takes up to `steps` Adam steps; with `psnr_stop`, a network whose PSNR
    reaches the threshold stops there and keeps the parameters of that first step over it.
    The result for a network does not depend on the others or on `batch_size`.

    Args:
        images: `(N, H, W)` or `(N, H, W, C)` targets in `[0, 1]`.
        init_weights: per layer `(N, out, in)` initial weights (PyTorch layout).
        init_biases: per layer `(N, out)`.
        steps: at most this many Adam steps per network.
        w0: SIREN frequency of the hidden sine layers.
        output_offset: added to the output (the DWS INRs use 0.5).
        lr, betas, eps: Adam's options (as `torch.optim.Adam`).
        dtype: float32 (fast) or float64 (exact comparisons).
        compile: fuse the step with `torch.compile`.
        psnr_stop: early-stopping threshold in dB (None: always `steps` steps).
        batch_size: networks fitted at once (None: all N); finished networks leave their
            slot to pending ones.
        on_done: called with the number of networks that just finished (progress).

    Returns:
        A `FitResult` with each network's kept parameters, MSE, steps and stop flag.

    Raises:
        ValueError: if there are no images, or the networks do not map 2 coordinates to the
            image's channels.

    Example:
        ```python
        import numpy as np
        from scalegmn.tasks.zoo.siren import dws_init, fit_sirens

        images = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)  # 4 images in [0, 1]
        ws, bs = zip(*[dws_init((2, 32, 32, 1), 30.0, np.random.default_rng(i)) for i in range(4)])
        res = fit_sirens(images, [np.stack(w) for w in zip(*ws)], [np.stack(b) for b in zip(*bs)],
                         steps=50, lr=5e-4, psnr_stop=40.0, batch_size=2)
        print(res.steps, res.psnr)  # per network: steps taken (50: none reached 40 dB) and PSNR
        ```
    """
    imgs = torch.as_tensor(np.asarray(images), dtype=dtype)
    if imgs.ndim == 3:
        imgs = imgs.unsqueeze(-1)
    N, H, W, C = imgs.shape
    if N == 0:
        raise ValueError("fit_sirens needs at least one image; got an empty (0, H, W) array")
    targets = imgs.reshape(N, H * W, C)
    coords = coordinate_grid(H, W, dtype)
    if init_weights[0].shape[-1] != 2 or init_weights[-1].shape[1] != C:
        raise ValueError(
            f"SIRENs map 2 coordinates to {C} channel(s); got first weight {init_weights[0].shape} "
            f"and last weight {init_weights[-1].shape}"
        )
    n_layers = len(init_weights)
    # Stacked in the fitting layout: weight (N, in, out), bias (N, out).
    init: list[Tensor] = []
    for w, b in zip(init_weights, init_biases, strict=True):
        init.append(torch.as_tensor(np.asarray(w), dtype=dtype).transpose(1, 2).contiguous())
        init.append(torch.as_tensor(np.asarray(b), dtype=dtype).contiguous())
    out_p = [torch.empty_like(p) for p in init]
    out_mse = np.empty(N, np.float64)
    out_steps = np.zeros(N, np.int64)
    out_stop = np.zeros(N, bool)
    thr = -math.inf if psnr_stop is None else 10.0 ** (-psnr_stop / 10.0)

    B = N if batch_size is None else max(1, min(batch_size, N))
    buckets = _buckets(B)
    slot_net = np.arange(B)  # network in each slot; -1 = idle
    nxt = B
    params = [p[:B].clone() for p in init]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    taken = np.zeros(B, np.int64)  # steps each slot's network has taken
    target = targets[:B].clone()
    fn = _compiled_step() if compile else _step
    while True:
        active = slot_net >= 0
        if not active.any():
            break
        t = torch.as_tensor(taken + 1, dtype=dtype)
        new_p, new_m, new_v, mse_t = fn(params, m, v, t, coords, target, w0, output_offset, lr,
                                        betas[0], betas[1], eps)
        mse = mse_t.detach().numpy().astype(np.float64)
        reached = mse <= thr
        done = np.nonzero(active & (reached | (taken >= steps)))[0]
        for s in done:
            k = int(slot_net[s])
            for j in range(2 * n_layers):
                out_p[j][k] = params[j][s]  # the parameters before this step's update
            out_mse[k], out_steps[k], out_stop[k] = mse[s], taken[s], reached[s]
        params, m, v = new_p, new_m, new_v
        taken += 1
        if len(done):
            for s in done:
                if nxt < N:
                    slot_net[s], taken[s] = nxt, 0
                    for j in range(2 * n_layers):
                        params[j][s] = init[j][nxt]
                        m[j][s] = 0.0
                        v[j][s] = 0.0
                    target[s] = targets[nxt]
                    nxt += 1
                else:
                    slot_net[s] = -1
            if on_done is not None:
                on_done(len(done))
            n_active = int((slot_net >= 0).sum())
            size = next(b for b in buckets if b >= max(n_active, 1))
            if nxt >= N and size < len(slot_net):
                # Nothing pending: gather the busy slots into a smaller bucket (idle padding).
                busy = np.nonzero(slot_net >= 0)[0]
                pad = np.full(size - len(busy), busy[0] if len(busy) else 0)
                keep = torch.as_tensor(np.concatenate([busy, pad]), dtype=torch.long)
                params = [p[keep] for p in params]
                m = [x[keep] for x in m]
                v = [x[keep] for x in v]
                target = target[keep]
                taken = np.concatenate([taken[busy], np.zeros(len(pad), np.int64)])
                slot_net = np.concatenate([slot_net[busy], np.full(len(pad), -1)])
    return FitResult(
        weights=[out_p[2 * i].transpose(1, 2).contiguous().numpy() for i in range(n_layers)],
        biases=[out_p[2 * i + 1].numpy().copy() for i in range(n_layers)],
        mse=out_mse, steps=out_steps, stopped=out_stop,
    )
