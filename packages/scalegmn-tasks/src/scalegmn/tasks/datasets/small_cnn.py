"""The Small CNN Zoo (Unterthiner et al. 2020): CIFAR-10-GS, SVHN-GS, and zoos in its format.

Files: `weights.npy` (one row per checkpoint, TensorFlow layout), `layout.csv` (which
slice of a row is which variable), `metrics.csv.gz` (one line per row: `step`,
`test_accuracy`, `config.activation`, ...), and optionally NFN's split file
(`cifar10_split.csv` / `svhn_split.csv`: a permutation of all rows, one per line).

The common protocol: reorder rows and metrics by the permutation (identity without a split
file), keep the rows of the final step (86), take the second half as test, shuffle the
first half with `random.Random(0)` and split it 80/20 into train/val, then filter by
activation. `weights.npy` is memory-mapped; a network is converted when first used.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph import ConvLayer, DenseLayer, Network, NetworkSpec

from .base import DataError, LoadReport, NetworkDataset, OnError, check_on_error, check_split

SPLIT_FILES = ("cifar10_split.csv", "svhn_split.csv")
FINAL_STEP = 86


def read_metrics(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of `metrics.csv.gz` (plain CSV also accepted).

    Raises:
        DataError: if missing, unreadable, or without `test_accuracy` and `step` columns.
    """
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        reader = csv.DictReader(io.StringIO(raw.decode()))
        rows = list(reader)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot be read as (gzipped) CSV ({e})") from None
    header = reader.fieldnames or []
    for col in ("step", "test_accuracy"):
        if col not in header:
            raise DataError(f"{path}: has no column {col!r} (columns: {', '.join(header[:12])} ...)")
    return list(header), rows


def read_split_file(path: Path, n_rows: int) -> NDArray[np.int64]:
    """NFN's split file: a permutation of `range(n_rows)`, one row id per line, no header.

    Raises:
        DataError: naming the line if an entry is not an integer, out of range, or repeated.
    """
    out = []
    for k, line in enumerate(path.read_text().splitlines()):
        text = line.strip().split(",")[-1].strip()
        if not text:
            continue
        try:
            out.append(int(float(text)))
        except ValueError:
            raise DataError(f"{path}, line {k + 1}: {line!r} is not a row id") from None
    perm = np.asarray(out, dtype=np.int64)
    if len(perm) != n_rows:
        raise DataError(f"{path}: lists {len(perm)} rows but weights.npy has {n_rows}")
    bad = np.nonzero((perm < 0) | (perm >= n_rows))[0]
    if bad.size:
        raise DataError(f"{path}, line {bad[0] + 1}: row id {perm[bad[0]]} is out of range 0..{n_rows - 1}")
    if len(np.unique(perm)) != n_rows:
        vals, counts = np.unique(perm, return_counts=True)
        raise DataError(f"{path}: row id {vals[counts > 1][0]} appears more than once; not a permutation")
    return perm


def spec_from_layout(layout: Any, activation: str, image_size: int = 32, stride: int = 2) -> NetworkSpec:
    """The `NetworkSpec` of a Small-CNN-Zoo network from its parsed layout.

    Args:
        layout: the result of `scalegmn.weightgraph.parse_layout_csv`.
        activation: the hidden activation.
        image_size: input height = width.
        stride: stride of every conv layer (TensorFlow "same" padding).
    """
    layers: list[DenseLayer | ConvLayer] = []
    kernels = [e for e in _entries(layout) if e[0].endswith("kernel:0")]
    for name, shape in kernels:
        if len(shape) == 4:
            kh, kw, c_in, c_out = shape
            layers.append(ConvLayer(in_channels=c_in, out_channels=c_out, kernel_size=(kh, kw),
                                    stride=(stride, stride), padding="same", activation=activation))  # type: ignore[arg-type]
        elif len(shape) == 2:
            layers.append(DenseLayer(in_features=shape[0], out_features=shape[1]))
        else:
            raise DataError(f"layout variable {name!r} has shape {shape}; expected 4-d conv or 2-d dense")
    if not layers or not isinstance(layers[0], ConvLayer):
        raise DataError("layout.csv: the first kernel must be a conv kernel (kh, kw, in, out)")
    return NetworkSpec(layers=layers, input_shape=(layers[0].n_in, image_size, image_size),
                       pooling="global_avg" if isinstance(layers[-1], DenseLayer) else None)


def _entries(layout: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(r.varname, tuple(r.shape)) for r in layout]


def protocol_split(n: int, split: str) -> NDArray[np.int64]:
    """Positions (in the reordered, step-filtered rows) of `split` under the common protocol."""
    half = int(0.5 * n)
    if split == "test":
        return np.arange(half, n, dtype=np.int64)
    if split == "all":
        return np.arange(n, dtype=np.int64)
    trainval = list(range(half))
    random.Random(0).shuffle(trainval)
    cut = int(0.8 * len(trainval))
    # the published order: the shuffled order, not sorted
    return np.asarray(trainval[:cut] if split == "train" else trainval[cut:], dtype=np.int64)


class SmallCNNZooDataset(NetworkDataset):
    """A split of a Small-CNN-Zoo-format data set (rows of a memory-mapped `weights.npy`).

    Attributes:
        rows: `(len,)` row of each network in `weights.npy`.
        activations: `(len,)` activation name of each network.
        layout: the parsed `layout.csv`.
    """

    def __init__(self, root: Path, weights: NDArray, layout: Any, rows: NDArray[np.int64],
                 activations: list[str], targets: NDArray, columns: dict[str, NDArray], split: str,
                 report: LoadReport, image_size: int, cache: bool = True) -> None:
        super().__init__(f"small-cnn-zoo:{root.name}", split, targets, columns, report, cache)
        self.root = root
        self._weights = weights
        self.layout = layout
        self.rows = rows
        self.activations = activations
        self._specs = {a: spec_from_layout(layout, a, image_size) for a in sorted(set(activations))}

    @property
    def specs(self) -> list[NetworkSpec]:
        """One architecture per activation present."""
        return list(self._specs.values())

    def _fetch(self, indices: NDArray[np.int64]) -> list[Network]:
        from scalegmn.weightgraph import from_flat

        out = []
        for i in indices:
            row = int(self.rows[i])
            try:
                out.append(from_flat(np.asarray(self._weights[row]), self.layout, self._specs[self.activations[i]]))
            except ValueError as e:
                raise DataError(f"{self.root / 'weights.npy'}, row {row}: {e}") from None
        return out


def load_small_cnn_zoo(
    root: str | os.PathLike[str],
    split: str = "train",
    activation: str | None = None,
    *,
    step: int | None = FINAL_STEP,
    split_file: str | os.PathLike[str] | None = None,
    image_size: int = 32,
    on_error: OnError = "raise",
    cache: bool = True,
) -> SmallCNNZooDataset:
    """A split of the Small CNN Zoo (CIFAR-10-GS, SVHN-GS) or a zoo in its format.

    Args:
        root: folder with `weights.npy`, `layout.csv`, `metrics.csv.gz` (and a split file).
        split: `"train"`, `"val"`, `"test"` or `"all"`.
        activation: keep only networks with this `config.activation` (`"relu"`, `"tanh"`).
        step: keep only rows of this training step (None: every row).
        split_file: NFN's permutation file (default: `cifar10_split.csv` or
            `svhn_split.csv` in `root` if exactly one exists; pass `"none"` for identity).
        image_size: the networks' input size (32 for CIFAR-10-GS and SVHN-GS).
        on_error: `"raise"` or `"skip"` rows with non-finite weights or unknown activations.
        cache: keep converted networks after their first use.

    Returns:
        A dataset whose target is `test_accuracy`; `ds.columns` has `row` and `step`.

    Raises:
        DataError: naming the file and row for any inconsistency.
    """
    from scalegmn.weightgraph import parse_layout_csv

    check_split(split)
    check_on_error(on_error)
    root = Path(root)
    wpath = root / "weights.npy"
    if not wpath.is_file():
        raise DataError(f"missing file {wpath}")
    try:
        weights = np.load(wpath, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{wpath}: not a numpy array file ({e})") from None
    if weights.ndim != 2:
        raise DataError(f"{wpath}: expected a (rows, params) matrix, got shape {weights.shape}")
    lpath = root / "layout.csv"
    if not lpath.is_file():
        raise DataError(f"missing file {lpath}")
    try:
        layout = parse_layout_csv(lpath)
    except ValueError as e:
        raise DataError(f"{lpath}: {e}") from None
    total = sum(int(np.prod(s)) for _, s in _entries(layout))
    if total != weights.shape[1]:
        raise DataError(f"{lpath} describes {total} parameters per row but {wpath} rows have {weights.shape[1]}")
    mpath = root / "metrics.csv.gz"
    if not mpath.is_file() and (root / "metrics.csv").is_file():
        mpath = root / "metrics.csv"
    header, metrics = read_metrics(mpath)
    n = weights.shape[0]
    if len(metrics) != n:
        raise DataError(f"{mpath} has {len(metrics)} rows but {wpath} has {n}")
    if split_file is None:
        found = [root / f for f in SPLIT_FILES if (root / f).is_file()]
        if len(found) > 1:
            raise DataError(f"{root}: several split files ({', '.join(f.name for f in found)}); pass split_file")
        perm = read_split_file(found[0], n) if found else np.arange(n)
    elif str(split_file) == "none":
        perm = np.arange(n)
    else:
        perm = read_split_file(Path(split_file), n)

    def num(r: int, col: str) -> float:
        try:
            return float(metrics[r][col])
        except (TypeError, ValueError):
            raise DataError(f"{mpath}, row {r}: {col}={metrics[r][col]!r} is not a number") from None

    order = perm
    if step is not None:
        order = np.asarray([r for r in perm if num(int(r), "step") == step], dtype=np.int64)
        if not len(order):
            raise DataError(f"{mpath}: no row has step {step}")
    chosen = order[protocol_split(len(order), split)]
    report = LoadReport()
    act_col = "config.activation"
    keep: list[int] = []
    for r in chosen:
        a = metrics[int(r)].get(act_col)
        if activation is not None and a != activation:
            continue
        if a not in ("relu", "tanh"):
            msg = f"{mpath}, row {r}: {act_col}={a!r} is not relu or tanh"
            if on_error == "raise":
                raise DataError(msg)
            report.add(msg)
            continue
        keep.append(int(r))
    rows = np.asarray(keep, dtype=np.int64)
    finite = np.ones(len(rows), dtype=bool)
    for lo in range(0, len(rows), 4096):
        block = np.asarray(weights[np.sort(rows[lo : lo + 4096])])
        ok = np.isfinite(block).all(axis=1)
        finite[lo : lo + 4096] = ok[np.argsort(np.argsort(rows[lo : lo + 4096]))]
    for r in rows[~finite]:
        msg = f"{wpath}, row {r}: non-finite weights (NaN or inf)"
        if on_error == "raise":
            raise DataError(msg)
        report.add(msg)
    for r in rows:
        if not np.isfinite(num(int(r), "test_accuracy")):
            raise DataError(f"{mpath}, row {r}: test_accuracy is not finite")
    rows = rows[finite]
    targets = np.asarray([num(int(r), "test_accuracy") for r in rows], dtype=np.float64)
    columns = {"row": rows, "step": np.asarray([num(int(r), "step") for r in rows], dtype=np.float64)}
    for extra in ("train_accuracy", "test_loss", "train_loss"):
        if extra in header:
            columns[extra] = np.asarray([num(int(r), extra) for r in rows], dtype=np.float64)
    acts = [metrics[int(r)][act_col] for r in rows]
    return SmallCNNZooDataset(root, weights, layout, rows, acts, targets, columns, split, report,
                              image_size, cache)
