"""`Network`: an architecture plus its parameters as numpy arrays, and a numpy forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .activations import get_activation
from .errors import NetworkError
from .schemas import ConvLayer, DenseLayer, NetworkSpec


@dataclass(frozen=True, eq=False)
class Network:
    """A feed-forward network: `spec` plus per-layer `weights` and `biases` (PyTorch layout).

    Dense weights are `(out, in)`, conv kernels `(out, in, kh, kw)`, biases `(out,)`.
    A layer without bias stores a zero bias. Arrays are validated (shape, finiteness) and
    made read-only so that no function can change a network behind its owner's back.

    Attributes:
        spec: the architecture.
        weights: one array per layer.
        biases: one array per layer.
    """

    spec: NetworkSpec
    weights: tuple[NDArray[np.floating], ...] = field()
    biases: tuple[NDArray[np.floating], ...] = field()

    def __init__(
        self,
        spec: NetworkSpec,
        weights: Sequence[ArrayLike],
        biases: Sequence[ArrayLike] | None = None,
        *,
        check_finite: bool = True,
    ) -> None:
        if not isinstance(spec, NetworkSpec):
            raise TypeError(f"spec must be a NetworkSpec, got {type(spec).__name__}")
        if len(weights) != spec.n_layers:
            raise NetworkError(
                f"the spec has {spec.n_layers} layers but {len(weights)} weight arrays were given"
            )
        if biases is None:
            biases = [np.zeros(layer.n_out) for layer in spec.layers]
        if len(biases) != spec.n_layers:
            raise NetworkError(
                f"the spec has {spec.n_layers} layers but {len(biases)} bias arrays were given"
            )
        ws, bs = [], []
        for i, (layer, w, b) in enumerate(zip(spec.layers, weights, biases, strict=True)):
            w = np.array(w, copy=True)
            b = np.array(b, copy=True)
            if w.dtype.kind not in "fiu" or b.dtype.kind not in "fiu":
                raise NetworkError(f"layer {i}: weights and biases must be real numbers")
            if w.dtype.kind != "f":
                w = w.astype(np.float64)
            if b.dtype.kind != "f":
                b = b.astype(w.dtype)
            if w.shape != layer.weight_shape:
                raise NetworkError(
                    f"layer {i} ({layer.kind}): weight has shape {w.shape}, the spec says "
                    f"{layer.weight_shape} (PyTorch layout: dense (out, in), conv (out, in, kh, kw))"
                )
            if b.shape != (layer.n_out,):
                raise NetworkError(
                    f"layer {i} ({layer.kind}): bias has shape {b.shape}, expected ({layer.n_out},)"
                )
            if not layer.bias and np.any(b != 0):
                raise NetworkError(f"layer {i} has bias=False in its spec but a non-zero bias")
            if check_finite:
                for name, a in (("weight", w), ("bias", b)):
                    if not np.all(np.isfinite(a)):
                        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
                        raise NetworkError(
                            f"layer {i}: {name} has {bad} non-finite value(s) (NaN or inf)"
                        )
            w.setflags(write=False)
            b.setflags(write=False)
            ws.append(w)
            bs.append(b)
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "weights", tuple(ws))
        object.__setattr__(self, "biases", tuple(bs))

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the first weight."""
        return self.weights[0].dtype

    def astype(self, dtype: type | np.dtype) -> Network:
        """The same network with parameters cast to `dtype`."""
        return Network(
            self.spec, [w.astype(dtype) for w in self.weights], [b.astype(dtype) for b in self.biases]
        )

    def replace(
        self,
        weights: Sequence[ArrayLike] | None = None,
        biases: Sequence[ArrayLike] | None = None,
    ) -> Network:
        """A copy with new weights and/or biases (validated against the same spec)."""
        return Network(
            self.spec,
            self.weights if weights is None else weights,
            self.biases if biases is None else biases,
        )

    def n_params(self) -> int:
        """Total number of parameters."""
        return int(sum(w.size + b.size for w, b in zip(self.weights, self.biases, strict=True)))

    def flat(self) -> NDArray[np.floating]:
        """All parameters in one vector: per layer, weight (row-major) then bias."""
        return np.concatenate(
            [np.concatenate([w.ravel(), b.ravel()]) for w, b in zip(self.weights, self.biases, strict=True)]
        )

    def equals(self, other: Network) -> bool:
        """Bit-for-bit equality of spec, dtype and parameters."""
        return (
            self.spec == other.spec
            and all(
                a.dtype == b.dtype and np.array_equal(a, b)
                for a, b in zip(self.weights + self.biases, other.weights + other.biases, strict=True)
            )
        )

    def __repr__(self) -> str:
        widths = "-".join(str(w) for w in self.spec.widths)
        acts = ",".join(sorted(set(self.spec.activations)))
        return f"Network({widths}, activations={acts}, dtype={self.dtype}, params={self.n_params()})"


def apply_activation(z: NDArray, layer: DenseLayer | ConvLayer) -> NDArray:
    """Apply `layer.activation` to pre-activations `z` (numpy), as its registry entry defines it."""
    try:
        entry = get_activation(layer.activation)
    except ValueError as err:
        raise NetworkError(f"activation {layer.activation!r} has no numpy implementation: {err}") from None
    return entry.apply(z, layer)


def _conv2d(x: NDArray, w: NDArray, layer: ConvLayer) -> NDArray:
    """Cross-correlation of `x` `(B, C, H, W)` with `w` `(O, C, kh, kw)` (PyTorch semantics)."""
    t, b, le, r = layer.pads(x.shape[2], x.shape[3])
    x = np.pad(x, ((0, 0), (0, 0), (t, b), (le, r)))
    kh, kw = layer.kernel_size
    sh, sw = layer.stride
    oh = (x.shape[2] - kh) // sh + 1
    ow = (x.shape[3] - kw) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    win = win[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
    return np.einsum("bchwij,ocij->bohw", win, w, optimize=True)


def forward(network: Network, x: ArrayLike) -> NDArray:
    """The network's function in plain numpy: the reference for "same function".

    Args:
        network: the network.
        x: inputs `(batch, features)` for an MLP or `(batch, channels, height, width)` for a
            CNN (a single unbatched input is accepted too).

    Returns:
        The outputs, `(batch, out)` (or `(batch, C, H, W)` for a network ending in conv).
    """
    spec = network.spec
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(network.dtype)
    unbatched = x.ndim == len(spec.input_shape)
    if unbatched:
        x = x[None]
    if tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise NetworkError(
            f"input has shape {tuple(x.shape[1:])} per example; the network expects "
            f"{tuple(spec.input_shape)}"
        )
    h = x
    for i, (layer, w, b) in enumerate(zip(spec.layers, network.weights, network.biases, strict=True)):
        if isinstance(layer, ConvLayer):
            h = _conv2d(h, w, layer) + b[None, :, None, None]
        else:
            if h.ndim == 4:
                h = h.mean(axis=(2, 3)) if spec.pooling == "global_avg" else h.reshape(h.shape[0], -1)
            h = h @ w.T + b
        del i
        h = apply_activation(h, layer)
    if spec.output_offset:
        h = h + spec.output_offset
    return h[0] if unbatched else h
