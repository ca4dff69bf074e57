"""`open_zoo`: a split of one of the project's zoos as a dataset (shards read and checked on first use)."""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph import Network, NetworkSpec

from ..zoo.store import Zoo
from .base import NetworkDataset, check_split


class ZooDataset(NetworkDataset):
    """A split of a zoo; networks are read from their shards on demand.

    Attributes:
        zoo: the opened `Zoo`.
        ids: `(len,)` zoo ids of the networks in this split.
    """

    def __init__(self, zoo: Zoo, split: str, cache: bool = True) -> None:
        ids = zoo.split_ids(split)
        cols = {k: v[ids] for k, v in zoo.columns.items() if k not in ("target",)}
        super().__init__(str(zoo.root), split, zoo.targets[ids], cols, None, cache)
        self.zoo = zoo
        self.ids = ids

    @property
    def specs(self) -> list[NetworkSpec]:
        """The zoo's architectures that occur in this split."""
        used = sorted({self.zoo._shards[k].spec for k in np.unique(self.zoo.locate(self.ids))})
        return [self.zoo.specs[k] for k in used]

    def _fetch(self, indices: NDArray[np.int64]) -> list[Network]:
        ids = self.ids[indices]
        where = self.zoo.locate(ids)
        spec_of = np.array([self.zoo._shards[k].spec for k in where], dtype=np.int64)
        out: list[Network | None] = [None] * len(ids)
        for s in np.unique(spec_of):
            sel = np.nonzero(spec_of == s)[0]
            spec, ws, bs = self.zoo.params(ids[sel])
            for j, k in enumerate(sel):
                out[k] = Network(spec, [w[j] for w in ws], [b[j] for b in bs])
        return out  # type: ignore[return-value]


def open_zoo(
    path: str | os.PathLike[str],
    split: str = "train",
    verify: Literal["access", "open", "none"] = "access",
    cache: bool = True,
) -> ZooDataset:
    """Open a split of a zoo built by `scalegmn zoo build` (or `build_inr_zoo` / `build_cnn_zoo`).

    Opening reads the manifest and the per-network columns only; shard files are
    read, checksummed and checked against the manifest when first used.

    Args:
        path: the zoo folder.
        split: `"train"`, `"val"`, `"test"` or `"all"`.
        verify: when to check shard checksums (`"access"`, `"open"`, `"none"`).
        cache: keep `Network` objects after their first fetch.

    Returns:
        A dataset with `len()`, `ds[i] -> (Network, target)`, `targets`, `columns`.

    Raises:
        ZooError: if the folder is not a complete zoo.
    """
    return ZooDataset(Zoo(path, verify=verify), check_split(split), cache=cache)
