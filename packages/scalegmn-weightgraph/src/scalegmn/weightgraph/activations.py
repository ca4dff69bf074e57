"""The activations scalegmn understands: one registry entry each, read by every backend.

An entry names the activation, the group of multipliers a hidden neuron followed by it
admits (`GroupKind`), its numpy function (the reference `forward`), the PyTorch module and
the equinox function that express it. The converters (`from_torch`, `to_torch`,
`from_equinox`, `to_equinox`), `forward`, `scalegmn.symmetry.group_of` and the batches of
both backends all read this table; torch, jax and equinox are imported only when an entry's
module or function is asked for.

Example:
    ```python
    from scalegmn.weightgraph.activations import GroupKind, get_activation

    entry = get_activation("hardtanh")
    assert entry.group is GroupKind.SIGN  # odd: hardtanh(-x) = -hardtanh(x)
    ```
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray


class GroupKind(IntEnum):
    """The group of multipliers `q` of a hidden neuron; the value is the code batches store.

    `PERMUTATION`: q = 1 (the neuron can only be permuted); `SCALE`: q > 0 (positively
    homogeneous activations); `SIGN`: q in {+1, -1} (odd activations); `NONZERO`: q != 0
    (linear). Both backends use these integer codes for their per-node groups.
    """

    PERMUTATION = 0
    SCALE = 1
    SIGN = 2
    NONZERO = 3

    @property
    def label(self) -> str:
        """The group's name as configs and `group_of` write it (`"scale"`, ...)."""
        return self.name.lower()

    @property
    def continuous(self) -> bool:
        """Whether multipliers of any magnitude are allowed (so features are normalised)."""
        return self in (GroupKind.SCALE, GroupKind.NONZERO)

    @property
    def flips(self) -> bool:
        """Whether a multiplier may be negative (so features are sign-symmetrised)."""
        return self in (GroupKind.SIGN, GroupKind.NONZERO)

    @classmethod
    def from_label(cls, label: str) -> GroupKind:
        """The kind named `label` (`"permutation"`, `"scale"`, `"sign"` or `"nonzero"`).

        Raises:
            ValueError: for any other name.
        """
        try:
            return cls[label.upper()]
        except KeyError:
            names = ", ".join(k.label for k in cls)
            raise ValueError(f"unknown group {label!r}; groups are {names}") from None


Activation = Literal[
    "relu",
    "leaky_relu",
    "tanh",
    "sine",
    "identity",
    "sigmoid",
    "gelu",
    "silu",
    "softplus",
    "elu",
    "hardtanh",
    "softsign",
    "relu6",
]
"""Activation names understood everywhere in scalegmn (applied after a layer); the keys of
`REGISTRY`, spelled out so that type checkers and the JSON Schema see them."""


def _load(dotted: str) -> Any:
    """The object at `"package.module.name"`, importing the module on first use."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ActivationEntry:
    """Everything scalegmn knows about one activation.

    Attributes:
        name: the name layers carry (`DenseLayer.activation`).
        group: the multipliers a hidden neuron followed by it admits.
        numpy: `f(z, **params) -> array`, the reference function (elementwise).
        torch: dotted name of the `nn.Module` class that expresses it (`None`: no module,
            the identity); `to_torch` builds it with `params`, `from_torch` reads it and its
            subclasses.
        equinox: dotted name of the jax function (or, with `params`, the `eqx.Module` class)
            that `to_equinox` wraps in an `eqx.nn.Lambda` and `from_equinox` recognises.
        params: layer fields the activation reads (`"w0"`, `"negative_slope"`); the torch
            and equinox classes take and store them under the same names.
        torch_fixed: attribute values a torch module must have to mean this activation
            (e.g. `ELU` only with `alpha=1.0`); other values are refused by name.
    """

    name: str
    group: GroupKind
    numpy: Callable[..., NDArray]
    torch: str | None
    equinox: str
    params: tuple[str, ...] = ()
    torch_fixed: Mapping[str, Any] = field(default_factory=dict)

    def layer_params(self, layer: Any) -> dict[str, float]:
        """The values of `params` on `layer` (a `DenseLayer` or `ConvLayer`)."""
        return {p: float(getattr(layer, p)) for p in self.params}

    def apply(self, z: NDArray, layer: Any) -> NDArray:
        """This activation of the pre-activations `z` (any shape) with `layer`'s parameters."""
        return self.numpy(z, **self.layer_params(layer))

    def torch_class(self) -> type | None:
        """The torch module class (imports torch)."""
        return None if self.torch is None else _load(self.torch)  # type: ignore[no-any-return]

    def torch_module(self, layer: Any) -> Any:
        """A torch module computing this activation with `layer`'s parameters, or `None`."""
        cls = self.torch_class()
        return None if cls is None else cls(**self.layer_params(layer))

    def equinox_object(self) -> Any:
        """The jax function or equinox module class (imports jax)."""
        return _load(self.equinox)

    def equinox_function(self, layer: Any) -> Callable[[Any], Any]:
        """A jax callable computing this activation with `layer`'s parameters."""
        obj = self.equinox_object()
        return obj(**self.layer_params(layer)) if self.params else obj  # type: ignore[no-any-return]


def _sigmoid(z: NDArray) -> NDArray:
    return 1.0 / (1.0 + np.exp(-z))


def _elu(z: NDArray) -> NDArray:
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def _gelu(z: NDArray) -> NDArray:
    verf = np.vectorize(math.erf, otypes=[z.dtype])
    return 0.5 * z * (1.0 + verf(z / math.sqrt(2.0)))  # type: ignore[no-any-return]


_EQX = "scalegmn.weightgraph.convert.equinox"
_TORCH = "scalegmn.weightgraph.convert.torch"

REGISTRY: dict[str, ActivationEntry] = {e.name: e for e in (
    ActivationEntry("relu", GroupKind.SCALE, lambda z: np.maximum(z, 0), "torch.nn.ReLU", "jax.nn.relu"),
    ActivationEntry("leaky_relu", GroupKind.SCALE,
                    lambda z, negative_slope: np.where(z >= 0, z, negative_slope * z),
                    "torch.nn.LeakyReLU", f"{_EQX}.LeakyReLU", params=("negative_slope",)),
    ActivationEntry("tanh", GroupKind.SIGN, np.tanh, "torch.nn.Tanh", "jax.numpy.tanh"),
    ActivationEntry("sine", GroupKind.SIGN, lambda z, w0: np.sin(w0 * z), f"{_TORCH}.Sine", f"{_EQX}.Sine",
                    params=("w0",)),
    ActivationEntry("identity", GroupKind.NONZERO, lambda z: z, None, f"{_EQX}._identity"),
    ActivationEntry("sigmoid", GroupKind.PERMUTATION, _sigmoid, "torch.nn.Sigmoid", "jax.nn.sigmoid"),
    ActivationEntry("gelu", GroupKind.PERMUTATION, _gelu, "torch.nn.GELU", f"{_EQX}.gelu_exact",
                    torch_fixed={"approximate": "none"}),
    ActivationEntry("silu", GroupKind.PERMUTATION, lambda z: z / (1.0 + np.exp(-z)), "torch.nn.SiLU",
                    "jax.nn.silu"),
    ActivationEntry("softplus", GroupKind.PERMUTATION, lambda z: np.logaddexp(0.0, z), "torch.nn.Softplus",
                    "jax.nn.softplus", torch_fixed={"beta": 1.0, "threshold": 20.0}),
    ActivationEntry("elu", GroupKind.PERMUTATION, _elu, "torch.nn.ELU", "jax.nn.elu", torch_fixed={"alpha": 1.0}),
    # hardtanh(q z) = q hardtanh(z) only for q = +-1: the clip at +-1 breaks positive scalings
    ActivationEntry("hardtanh", GroupKind.SIGN, lambda z: np.clip(z, -1.0, 1.0), "torch.nn.Hardtanh",
                    "jax.nn.hard_tanh", torch_fixed={"min_val": -1.0, "max_val": 1.0}),
    ActivationEntry("softsign", GroupKind.SIGN, lambda z: z / (1.0 + np.abs(z)), "torch.nn.Softsign",
                    "jax.nn.soft_sign"),
    # bounded and not odd: only permutations
    ActivationEntry("relu6", GroupKind.PERMUTATION, lambda z: np.clip(z, 0.0, 6.0), "torch.nn.ReLU6",
                    "jax.nn.relu6", torch_fixed={"min_val": 0.0, "max_val": 6.0}),
)}
"""Every activation by name, in the order of `Activation`."""

if tuple(REGISTRY) != get_args(Activation):
    raise RuntimeError(
        f"scalegmn.weightgraph.activations: the Activation literal {get_args(Activation)} must list the "
        f"registry's names {tuple(REGISTRY)} in the same order; add the new name to both"
    )

ACTIVATIONS: tuple[str, ...] = tuple(REGISTRY)
"""The names of `REGISTRY`."""


def get_activation(name: str) -> ActivationEntry:
    """The registry entry of activation `name`.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; supported: {', '.join(ACTIVATIONS)}") from None


def group_kind(activation: str) -> GroupKind:
    """The `GroupKind` of a hidden neuron followed by `activation`.

    Raises:
        ValueError: for an unknown activation name.
    """
    return get_activation(activation).group


def activation_group(activation: str) -> str:
    """The multiplier group of a hidden neuron followed by `activation`, by name.

    `"scale"`: q > 0 (relu, leaky_relu); `"sign"`: q in {+1, -1} (odd functions: tanh,
    sine, hardtanh, softsign); `"nonzero"`: q != 0 (identity); `"permutation"`: q = 1.

    Raises:
        ValueError: for an unknown activation name.
    """
    return group_kind(activation).label


@cache
def torch_classes() -> dict[type, ActivationEntry]:
    """Torch module class -> entry, for reading modules (imports torch)."""
    out: dict[type, ActivationEntry] = {}
    for entry in REGISTRY.values():
        cls = entry.torch_class()
        if cls is not None:
            out[cls] = entry
    return out


def torch_entry(module: Any) -> ActivationEntry | None:
    """The entry whose torch class is the nearest base of `module`'s class, or `None`.

    The nearest base wins, so `nn.ReLU6` (a subclass of `nn.Hardtanh`) reads as relu6.
    """
    table = torch_classes()
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    return None
