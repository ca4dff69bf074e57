"""Exact geometric augmentation of INRs, done on their weights.

An INR maps a coordinate `x` to a value, `f(x) = g(W_1 x + b_1)` with `g` the rest of the
network. The same image moved by a similarity transform, `f(A x + t)` with `A = s R(theta)`,
is the INR with first layer `W_1 A` and bias `b_1 + W_1 t`: no refitting, no
approximation. Rotating, scaling and shifting digit images by small amounts keeps their
labels, so this gives a metanetwork new training networks every step from a small zoo, for
every model alike (ScaleGMN, the GMN and the MLP baseline see the same draws).

`InrAugment` is the `augment` field of a run config; `transform_inr` is the exact map;
`random_similarity` draws one transform.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from scalegmn.weightgraph import DenseLayer, Network


class AugmentError(ValueError):
    """A network that the augmentation cannot transform (not an INR of 2-D coordinates)."""


class InrAugment(BaseModel):
    """Random similarity transforms of INR training networks, drawn anew every step.

    The coordinates of the zoo's INRs span `[-1, 1]` on each axis. Each training network of
    a step gets its own draw: a rotation by `U(-rotate_deg, rotate_deg)` degrees, an
    isotropic scaling by `U(1 - scale, 1 + scale)` and a shift by `U(-shift, shift)` per
    axis. Validation and test networks are never transformed.

    Attributes:
        rotate_deg: largest rotation, in degrees.
        scale: largest relative change of size.
        shift: largest shift per axis, in coordinate units (`2 / 28` is one MNIST pixel).

    Example:
        ```python
        from scalegmn.tasks.augment import InrAugment

        aug = InrAugment(rotate_deg=15, scale=0.1, shift=0.1)
        assert aug.active
        ```
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    rotate_deg: float = Field(default=0.0, ge=0.0, le=180.0)
    scale: float = Field(default=0.0, ge=0.0, lt=1.0)
    shift: float = Field(default=0.0, ge=0.0, le=1.0)

    @property
    def active(self) -> bool:
        """Whether any transform is drawn (all zero: the networks are left as they are)."""
        return self.rotate_deg > 0 or self.scale > 0 or self.shift > 0


def check_inr(network: Network) -> None:
    """Raise `AugmentError` unless the network's first layer is dense on 2-D coordinates."""
    first = network.spec.layers[0]
    if not isinstance(first, DenseLayer) or first.in_features != 2:
        what = (f"a dense layer on {first.in_features} inputs" if isinstance(first, DenseLayer)
                else f"a {first.kind} layer")
        raise AugmentError(
            f"augment transforms INRs of 2-D coordinates, but the first layer is {what}; "
            "remove augment from the run config for this data"
        )


def transform_inr(network: Network, a: NDArray[np.floating], t: NDArray[np.floating]) -> Network:
    """The INR `x -> f(a x + t)`: first layer `W_1 a`, bias `b_1 + W_1 t`.

    Args:
        network: the INR `f` (first layer dense on 2-D coordinates).
        a: `[2, 2]`.
        t: `[2]`.

    Returns:
        A new network; every other layer equals `network`'s.

    Raises:
        AugmentError: the network is not an INR of 2-D coordinates.

    Example:
        ```python
        import numpy as np
        from scalegmn.tasks.augment import transform_inr
        from scalegmn.weightgraph import NetworkSpec, forward, random_network

        f = random_network(NetworkSpec.siren([2, 8, 1]), rng=0)
        a, t = np.array([[0.0, -1.0], [1.0, 0.0]]), np.array([0.1, 0.0])
        g = transform_inr(f, a, t)
        x = np.random.default_rng(0).uniform(-1, 1, (5, 2))
        assert np.allclose(forward(g, x), forward(f, x @ a.T + t))
        ```
    """
    check_inr(network)
    w1, b1 = network.weights[0], network.biases[0]
    dtype = w1.dtype
    w64 = w1.astype(np.float64)
    new_w = (w64 @ np.asarray(a, np.float64)).astype(dtype)
    new_b = (b1.astype(np.float64) + (w64 @ np.asarray(t, np.float64))).astype(b1.dtype)
    return Network(network.spec, [new_w, *network.weights[1:]], [new_b, *network.biases[1:]])


def random_similarity(rng: np.random.Generator, aug: InrAugment) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """One draw of `(a, t)`: `a = s R(theta)` and the shift `t`, as `aug` describes."""
    theta = math.radians(rng.uniform(-aug.rotate_deg, aug.rotate_deg)) if aug.rotate_deg > 0 else 0.0
    s = rng.uniform(1.0 - aug.scale, 1.0 + aug.scale) if aug.scale > 0 else 1.0
    t = rng.uniform(-aug.shift, aug.shift, size=2) if aug.shift > 0 else np.zeros(2)
    c, si = math.cos(theta), math.sin(theta)
    return s * np.array([[c, -si], [si, c]]), np.asarray(t, np.float64)


__all__ = ["AugmentError", "InrAugment", "check_inr", "random_similarity", "transform_inr"]
