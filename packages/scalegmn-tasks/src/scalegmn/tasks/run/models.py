"""The model kinds a run can train, chosen once per run from `MODEL_KINDS`.

A kind says what the model sees and which configuration it gets; each backend
(`scalegmn.tasks.run.backends`) has one builder per `family`:

* `"graph"`: a ScaleGMN on the network's graph (`ScaleGMN`, `GMN`s as permutation-only ScaleGMNs);
* `"weights"`: an MLP on the flattened parameter vector (one architecture per zoo).

Adding a kind is one entry here (and, for a new family, one builder per backend).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from scalegmn.weightgraph import Network, ScaleGMNConfig

from .config import TrainError


def _identity(networks: Sequence[Network]) -> list[Network]:
    return list(networks)


def _normalised(networks: Sequence[Network]) -> list[Network]:
    from scalegmn.symmetry import normalize_inputs

    return [normalize_inputs(n) for n in networks]


def _canonicalised(networks: Sequence[Network]) -> list[Network]:
    from scalegmn.symmetry import canonicalize

    return [canonicalize(n, sort=True) for n in networks]


@dataclass(frozen=True)
class ModelKind:
    """One kind of model.

    Attributes:
        name: the `RunConfig.model` value.
        family: `"graph"` (a ScaleGMN) or `"weights"` (an MLP on the flattened weights).
        prepare: the input transformation applied to every split before training.
        symmetry: a symmetry forced on the ScaleGMN configuration (None: the config's own).
        label: a human name.
    """

    name: str
    family: Literal["graph", "weights"]
    prepare: Callable[[Sequence[Network]], list[Network]]
    symmetry: str | None
    label: str

    def gmn_config(self, gmn: ScaleGMNConfig) -> ScaleGMNConfig:
        """The model configuration this kind trains with (the symmetry forced if it forces one)."""
        return gmn if self.symmetry is None else gmn.model_copy(update={"symmetry": self.symmetry})


MODEL_KINDS: dict[str, ModelKind] = {
    k.name: k
    for k in (
        ModelKind("scalegmn", "graph", _identity, None, "ScaleGMN"),
        ModelKind("gmn", "graph", _normalised, "permutation", "GMN on group-normalised inputs"),
        ModelKind("gmn_canon", "graph", _canonicalised, "permutation", "GMN on canonicalised inputs"),
        ModelKind("mlp", "weights", _identity, None, "MLP on the flattened weights"),
    )
}


def get_model_kind(name: str) -> ModelKind:
    """The registered kind `name`.

    Raises:
        TrainError: for an unknown name (listing the known ones).
    """
    try:
        return MODEL_KINDS[name]
    except KeyError:
        raise TrainError(f"unknown model kind {name!r}; use one of {sorted(MODEL_KINDS)}") from None
