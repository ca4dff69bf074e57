"""Check that a converted `Network` computes what the framework model computes.

The readers see a model's layers, not its `forward`: a residual connection, an activation
applied functionally or a padding mode the reader ignores would give a network of the right
shapes and the wrong function. Running both on a few seeded random inputs catches that.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from ..errors import UnsupportedLayerError
from ..network import Network, forward

N_PROBES = 4
"""Random inputs each conversion is checked on."""


def probe_inputs(network: Network) -> NDArray[np.float64]:
    """Seeded inputs `(N_PROBES, *input_shape)` in [-1, 1] (the SIREN coordinate range)."""
    rng = np.random.default_rng(0)
    return rng.uniform(-1.0, 1.0, size=(N_PROBES, *network.spec.input_shape))


def verify_same_function(
    name: str, network: Network, run: Callable[[NDArray], NDArray], model_dtype: np.dtype, hint: str = ""
) -> Network:
    """`network`, once its function matches the model's on `probe_inputs` to rounding.

    A constant difference in every output (the model adds a constant after its last layer,
    as the DWS INRs do with `+ 0.5`) becomes the network's `output_offset`.

    Args:
        name: how the error names the model (its class).
        network: the converted network.
        run: the model applied to a batch `(n, *input_shape)` of `model_dtype` inputs.
        model_dtype: the dtype the model computes in (float64 gives a 1e-8 tolerance).
        hint: appended to the error (how to express what the reader could not see).

    Returns:
        `network`, or a copy with the output offset found.

    Raises:
        UnsupportedLayerError: the model fails on the probes, returns another shape, or
            computes another function.
    """
    x = probe_inputs(network)
    try:
        y = np.asarray(run(x.astype(model_dtype)), dtype=np.float64)
    except Exception as err:  # any failure of a foreign forward means it cannot be checked
        raise UnsupportedLayerError(
            f"{name}: running it on inputs of shape {x.shape[1:]} to check the conversion failed "
            f"({type(err).__name__}: {err}); pass input_shape or express it as a sequential model"
        ) from None
    ref = forward(network.astype(np.float64), x)
    if y.shape != ref.shape:
        raise UnsupportedLayerError(
            f"{name}: its forward returns shape {y.shape[1:]} per input, its layers give {ref.shape[1:]}; "
            f"its forward does something the layer list does not show{hint}"
        )
    scale = max(1.0, float(np.abs(ref).max()))
    if np.dtype(model_dtype) == np.float64:
        tol = 1e-8 * scale
    else:  # float32 rounding, amplified as much as the numpy float32 forward amplifies it
        err32 = float(np.abs(forward(network.astype(np.float32), x.astype(np.float32)) - ref).max())
        tol = 1e-4 * scale + 8 * err32
    diff = y - ref
    if float(np.abs(diff).max()) <= tol:
        return network
    offset = float(diff.flat[0])
    if network.spec.output_offset == 0 and float(np.abs(diff - offset).max()) <= tol:
        spec = network.spec.model_copy(update={"output_offset": offset})
        return Network(spec, network.weights, network.biases)
    raise UnsupportedLayerError(
        f"{name}: its forward does something the layer list does not show (outputs differ by up to "
        f"{float(np.abs(diff).max()):.3g} on random inputs: a residual connection, an activation applied "
        f"functionally, ...){hint}"
    )
