"""The dataset interface shared by every zoo: `len`, `ds[i] -> (Network, target)`, batches.

Parameters are held stacked per architecture (in memory or memory-mapped), so fetching a
batch is a fancy index, not a file read; `Network` objects and graph encodings are cached
after their first use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph import DenseBatch, Network, NetworkSpec, to_dense_batch

SPLIT_NAMES = ("train", "val", "test")
OnError = Literal["raise", "skip"]


class DataError(ValueError):
    """A published data file that is missing, corrupt, or not in the expected format."""


@dataclass
class LoadReport:
    """What a loader skipped with `on_error="skip"`.

    Attributes:
        skipped: number of networks left out.
        problems: one message per skipped network (file and row named), first 100 kept.
    """

    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        """Record one skipped network."""
        self.skipped += 1
        if len(self.problems) < 100:
            self.problems.append(message)


def check_split(split: str) -> str:
    """Validate a split name.

    Raises:
        ValueError: for anything but `"train"`, `"val"`, `"test"` or `"all"`.
    """
    if split not in (*SPLIT_NAMES, "all"):
        raise ValueError(f"unknown split {split!r}; use 'train', 'val', 'test' or 'all'")
    return split


def check_on_error(on_error: str) -> None:
    """Validate an `on_error` option."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


class NetworkDataset(Sequence[tuple[Network, Any]]):
    """A split of a zoo: `len(ds)`, `ds[i] -> (Network, target)`, and fast batches.

    Subclasses implement `_fetch(indices) -> list[Network]`; targets live in `targets`.

    Attributes:
        split: `"train"`, `"val"`, `"test"` or `"all"`.
        targets: `(len,)` labels (int64) or regression targets (float).
        columns: extra per-network metadata, each `(len,)`.
        report: what was skipped while loading.
        name: a short description.
    """

    split: str
    targets: NDArray
    columns: dict[str, NDArray]
    report: LoadReport
    name: str

    def __init__(self, name: str, split: str, targets: NDArray, columns: dict[str, NDArray] | None,
                 report: LoadReport | None, cache: bool = True) -> None:
        self.name = name
        self.split = split
        self.targets = np.asarray(targets)
        self.columns = columns or {}
        self.report = report or LoadReport()
        self._cache: dict[int, Network] | None = {} if cache else None
        self._graphs: dict[str, tuple[NDArray, NDArray]] = {}

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __repr__(self) -> str:
        specs = ", ".join("-".join(map(str, s.widths)) for s in self.specs)
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, archs=[{specs}])"

    @property
    def specs(self) -> list[NetworkSpec]:
        """The architectures in this dataset."""
        raise NotImplementedError

    def _fetch(self, indices: NDArray[np.int64]) -> list[Network]:
        raise NotImplementedError

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} networks")
        return i % n

    def networks(self, indices: Sequence[int] | NDArray) -> list[Network]:
        """The networks at `indices` (cached after the first fetch when `cache=True`)."""
        idx = [self._index(int(i)) for i in indices]
        if self._cache is None:
            return self._fetch(np.asarray(idx, dtype=np.int64))
        missing = sorted({i for i in idx if i not in self._cache})
        if missing:
            for i, net in zip(missing, self._fetch(np.asarray(missing, dtype=np.int64)), strict=True):
                self._cache[i] = net
        return [self._cache[i] for i in idx]

    def __getitem__(self, i: int) -> tuple[Network, Any]:  # type: ignore[override]
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index with an int (use .batch(indices) for many), got {type(i).__name__}")
        k = self._index(int(i))
        return self.networks([k])[0], self.targets[k].item()

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Network, Any]]:
        """Many items at once (PyTorch's `DataLoader` calls this for a whole batch)."""
        nets = self.networks(indices)
        return [(n, self.targets[self._index(int(i))].item()) for n, i in zip(nets, indices, strict=True)]

    def __iter__(self) -> Iterator[tuple[Network, Any]]:
        for i in range(len(self)):
            yield self[i]

    def batch(self, indices: Sequence[int] | NDArray) -> tuple[list[Network], NDArray]:
        """`(networks, targets)` for `indices`."""
        idx = np.asarray([self._index(int(i)) for i in indices], dtype=np.int64)
        return self.networks(idx), self.targets[idx]

    def dense_batch(self, indices: Sequence[int] | NDArray, input_node_value: float = 0.0) -> tuple[DenseBatch, NDArray]:
        """The graphs of `indices` stacked (`DenseBatch`), from a per-dataset graph cache.

        All graphs are encoded once (on the first call) and kept; later batches are a
        fancy index into the cached arrays.

        Raises:
            ValueError: if the dataset holds more than one architecture.
        """
        if len(self.specs) != 1:
            raise ValueError(
                f"dense_batch needs one architecture; this dataset has {len(self.specs)} (use batch())"
            )
        key = f"{input_node_value!r}"
        if key not in self._graphs:
            nodes, edges, lay = [], [], None
            for lo in range(0, len(self), 4096):
                b = to_dense_batch(self.networks(range(lo, min(lo + 4096, len(self)))), input_node_value)
                nodes.append(b.node_features)
                edges.append(b.edge_features)
                lay = b.layout
            assert lay is not None
            self._graphs[key] = (np.concatenate(nodes), np.concatenate(edges))
            self._layout = lay
        node, edge = self._graphs[key]
        idx = np.asarray([self._index(int(i)) for i in indices], dtype=np.int64)
        return DenseBatch(node_features=node[idx], edge_features=edge[idx], layout=self._layout), self.targets[idx]


class StackedDataset(NetworkDataset):
    """Networks of one architecture held as stacked arrays (in memory or memory-mapped).

    Args:
        spec: the architecture.
        weights: per layer `(n, *weight_shape)` (PyTorch layout).
        biases: per layer `(n, out)`.
        targets: `(n,)`.
        name: a short description.
        split: the split name.
        columns: extra per-network metadata, each `(n,)`.
        report: what was skipped while loading.
        cache: keep `Network` objects after their first fetch.
    """

    def __init__(
        self, spec: NetworkSpec, weights: Sequence[NDArray], biases: Sequence[NDArray],
        targets: NDArray, name: str = "", split: str = "all",
        columns: dict[str, NDArray] | None = None, report: LoadReport | None = None,
        cache: bool = True,
    ) -> None:
        super().__init__(name, split, targets, columns, report, cache)
        n = len(self.targets)
        for i, layer in enumerate(spec.layers):
            if weights[i].shape != (n, *layer.weight_shape) or biases[i].shape != (n, layer.n_out):
                raise DataError(
                    f"{name}: layer {i} arrays {weights[i].shape} / {biases[i].shape} do not match "
                    f"{n} networks of shape {layer.weight_shape} / ({layer.n_out},)"
                )
        self.spec = spec
        self.weights = list(weights)
        self.biases = list(biases)

    @property
    def specs(self) -> list[NetworkSpec]:
        """The single architecture."""
        return [self.spec]

    def _fetch(self, indices: NDArray[np.int64]) -> list[Network]:
        ws = [np.asarray(w[indices]) for w in self.weights]
        bs = [np.asarray(b[indices]) for b in self.biases]
        return [Network(self.spec, [w[k] for w in ws], [b[k] for b in bs]) for k in range(len(indices))]


class ConcatDataset(NetworkDataset):
    """Several datasets one after another (e.g. a training split plus augmented copies)."""

    def __init__(self, parts: Sequence[NetworkDataset], name: str = "", split: str = "all") -> None:
        if not parts:
            raise ValueError("ConcatDataset needs at least one dataset")
        report = LoadReport()
        for p in parts:
            report.skipped += p.report.skipped
            report.problems += p.report.problems[: max(0, 100 - len(report.problems))]
        keys = set.intersection(*(set(p.columns) for p in parts))
        cols = {k: np.concatenate([p.columns[k] for p in parts]) for k in sorted(keys)}
        super().__init__(name or parts[0].name, split, np.concatenate([p.targets for p in parts]),
                         cols, report, cache=False)
        self.parts = list(parts)
        self._offsets = np.cumsum([0] + [len(p) for p in parts])

    @property
    def specs(self) -> list[NetworkSpec]:
        """The architectures of every part (each once)."""
        out: list[NetworkSpec] = []
        for p in self.parts:
            out += [s for s in p.specs if s not in out]
        return out

    def _fetch(self, indices: NDArray[np.int64]) -> list[Network]:
        which = np.searchsorted(self._offsets, indices, side="right") - 1
        out: list[Network | None] = [None] * len(indices)
        for k in np.unique(which):
            sel = np.nonzero(which == k)[0]
            nets = self.parts[k].networks(indices[sel] - self._offsets[k])
            for s, n in zip(sel, nets, strict=True):
                out[s] = n
        return out  # type: ignore[return-value]
