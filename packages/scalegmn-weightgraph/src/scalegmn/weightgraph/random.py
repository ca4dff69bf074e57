"""Random networks for examples and tests."""

from __future__ import annotations

import numpy as np

from .network import Network
from .schemas import NetworkSpec


def random_network(
    spec: NetworkSpec,
    rng: np.random.Generator | int | None = None,
    dtype: type | np.dtype = np.float64,
    scale: float = 1.0,
) -> Network:
    """A network of `spec` with fan-in scaled Gaussian weights and Gaussian biases.

    Args:
        spec: the architecture.
        rng: a numpy Generator or a seed.
        dtype: parameter dtype.
        scale: multiplies every standard deviation.
    """
    rng = np.random.default_rng(rng)
    ws, bs = [], []
    for layer in spec.layers:
        fan_in = int(np.prod(layer.weight_shape[1:]))
        std = scale / np.sqrt(fan_in)
        if layer.activation == "sine":
            std = scale * np.sqrt(6.0 / fan_in) / layer.w0 * 3
        w = rng.normal(0.0, std, size=layer.weight_shape)
        b = rng.normal(0.0, scale * 0.1, size=layer.n_out) if layer.bias else np.zeros(layer.n_out)
        ws.append(w.astype(dtype))
        bs.append(b.astype(dtype))
    return Network(spec, ws, bs)
