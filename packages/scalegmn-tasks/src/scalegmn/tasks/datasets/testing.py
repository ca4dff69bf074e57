"""Writers of small fake data sets in the published layouts, for tests and examples.

Each writer produces the files a loader reads (`method.md` section 7), with random
parameters drawn from a seeded generator, and returns what it wrote so a test can compare
the loaded networks and labels with the stored ones. Every file is written atomically.

Example:
    ```python
    from scalegmn.tasks.datasets import load_dws_inrs
    from scalegmn.tasks.datasets.testing import write_dws_mnist

    written = write_dws_mnist("fake-mnist-inrs", n_train=8, n_test=3)
    ds = load_dws_inrs("fake-mnist-inrs", "test")
    ```
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import struct
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph.io import atomic_write

SMALL_CNN_VARS: list[tuple[str, tuple[int, ...]]] = [
    ("sequential/conv2d/kernel:0", (3, 3, 1, 16)), ("sequential/conv2d/bias:0", (16,)),
    ("sequential/conv2d_1/kernel:0", (3, 3, 16, 16)), ("sequential/conv2d_1/bias:0", (16,)),
    ("sequential/conv2d_2/kernel:0", (3, 3, 16, 16)), ("sequential/conv2d_2/bias:0", (16,)),
    ("sequential/dense/kernel:0", (16, 10)), ("sequential/dense/bias:0", (10,)),
]
"""The variables of a Small CNN Zoo network, in `layout.csv` order (TensorFlow layout)."""

SMALL_CNN_PARAMS = 4970
"""Parameters per row of the Small CNN Zoo's `weights.npy`."""


def siren_state_dict(rng: np.random.Generator, out: int = 1, hidden: int = 32, nan: bool = False) -> dict[str, Any]:
    """A random SIREN 2-hidden-hidden-out state dict with DWS's keys `seq.{0,1,2}.{weight,bias}`.

    Args:
        rng: the generator the values are drawn from (normal, std 0.1).
        out: output width (1 for DWS MNIST, 3 for NFN CIFAR-10).
        hidden: hidden width (32 in the published sets).
        nan: put one NaN into `seq.1.weight` (a corrupt file).

    Returns:
        `{key: float32 torch.Tensor}`; weights `(out_features, in_features)`.
    """
    import torch

    sd: dict[str, Any] = {}
    for k, (a, b) in enumerate([(2, hidden), (hidden, hidden), (hidden, out)]):
        sd[f"seq.{k}.weight"] = torch.from_numpy(rng.normal(0, 0.1, (b, a)).astype(np.float32))
        sd[f"seq.{k}.bias"] = torch.from_numpy(rng.normal(0, 0.1, b).astype(np.float32))
    if nan:
        sd["seq.1.weight"][3, 4] = float("nan")
    return sd


def save_state_dict(path: str | os.PathLike[str], sd: dict[str, Any]) -> Path:
    """`torch.save(sd, path)`, atomically (the folder is created)."""
    import torch

    def write(f: IO[bytes]) -> None:
        torch.save(sd, f)

    return atomic_write(path, write)


def write_dws_mnist(
    root: str | os.PathLike[str], n_train: int = 8, n_test: int = 3, seed: int = 0,
    labels: dict[tuple[str, int], int] | None = None,
) -> dict[tuple[str, int], tuple[int, dict[str, Any]]]:
    """DWS MNIST INRs: `mnist_png_{training,testing}_{label}_{idx}/checkpoints/model_final.pth`.

    Args:
        root: the data folder.
        n_train: INRs of training images `0 .. n_train - 1`.
        n_test: INRs of test images `0 .. n_test - 1`.
        seed: seeds the parameters.
        labels: `(kind, idx) -> label` with kind `"training"` or `"testing"` (default: a
            fixed pattern over the ten classes).

    Returns:
        `(kind, idx) -> (label, state dict)` of every INR written.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for kind, n in (("training", n_train), ("testing", n_test)):
        for idx in range(n):
            label = labels[(kind, idx)] if labels else (idx * 3 + (kind == "testing")) % 10
            sd = siren_state_dict(rng)
            save_state_dict(Path(root) / f"mnist_png_{kind}_{label}_{idx}" / "checkpoints" / "model_final.pth", sd)
            out[(kind, idx)] = (label, sd)
    return out


def write_dws_splits_json(
    root: str | os.PathLike[str], counts: tuple[int, int, int] = (4, 2, 2), seed: int = 2,
    prefix: str = "/data/elsewhere/fmnist_inrs",
) -> dict[str, tuple[int, dict[str, Any]]]:
    """DWS Fashion-MNIST INRs: state dicts holding their `label`, listed in `root/splits.json`.

    The listing holds absolute paths of another machine (as the published file does), so
    the loader must find each file under `root` by its last components.

    Args:
        root: the data folder.
        counts: INRs in train, val and test.
        seed: seeds the parameters.
        prefix: the foreign folder the listing names.

    Returns:
        `folder name -> (label, state dict)` of every INR written.
    """
    import torch

    rng = np.random.default_rng(seed)
    listing: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    out = {}
    splits = ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]
    for k, split in enumerate(splits):
        sd = siren_state_dict(rng)
        sd["label"] = torch.tensor(k % 10)
        save_state_dict(Path(root) / f"fmnist_inr_{k}" / "model.pth", sd)
        listing[split].append(f"{prefix}/fmnist_inr_{k}/model.pth")
        out[f"fmnist_inr_{k}"] = (k % 10, sd)
    atomic_write(Path(root) / "splits.json", json.dumps(listing))
    return out


def write_nfn_cifar(
    root: str | os.PathLike[str], n: int = 10, n_aug: int = 2, aug_below: int = 6, n_labels: int = 3,
    seed: int = 5,
) -> dict[tuple[str, int], tuple[int, dict[str, Any]]]:
    """NFN CIFAR-10 INRs: `randinit_smaller_{label}s/net{idx}.pth` and augmented copies.

    The files name their layers as NFN's do (`net.{i}.linear.{weight,bias}`), so a loader
    must take them in file order.

    Args:
        root: the data folder.
        n: networks `net0 .. net{n-1}`; label `idx % n_labels`.
        n_aug: augmented copies, in `randinit_smaller_aug{i}_{label}s`.
        aug_below: only networks with `idx < aug_below` get copies (the training split).
        n_labels: number of labels used.
        seed: seeds the parameters.

    Returns:
        `(prefix, idx) -> (label, state dict with DWS-style keys)` of every file written.
    """
    rng = np.random.default_rng(seed)
    out = {}
    prefixes = ["randinit_smaller"] + [f"randinit_smaller_aug{i}" for i in range(n_aug)]
    for idx in range(n):
        label = idx % n_labels
        for prefix in prefixes:
            if prefix != "randinit_smaller" and idx >= aug_below:
                continue
            sd = siren_state_dict(rng, out=3)
            stored = {k.replace("seq.", "net.").replace(".weight", ".linear.weight").replace(".bias", ".linear.bias"): v
                      for k, v in sd.items()}
            save_state_dict(Path(root) / f"{prefix}_{label}s" / f"net{idx}.pth", stored)
            out[(prefix, idx)] = (label, sd)
    return out


def write_small_cnn_zoo(
    root: str | os.PathLike[str], n_runs: int = 12, steps: tuple[int, ...] = (0, 86), nan_row: int | None = None,
    split: bool = True, seed: int = 0,
) -> tuple[NDArray[np.float32], list[dict[str, Any]], NDArray[np.int64] | None]:
    """A Small CNN Zoo: `weights.npy`, `layout.csv`, `metrics.csv.gz` and `cifar10_split.csv`.

    Args:
        root: the data folder (created).
        n_runs: training runs; one in three uses tanh, the others ReLU.
        steps: the checkpoints of each run (one row each).
        nan_row: put a NaN into this row of `weights.npy`.
        split: write NFN's split file (a random permutation of the rows).
        seed: seeds weights, accuracies and the permutation.

    Returns:
        `(weights, metrics, perm)`: `(rows, 4970)` float32, one metrics dict per row, and
        the permutation written (None without a split file).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows, metrics = [], []
    for run in range(n_runs):
        act = "relu" if run % 3 else "tanh"
        for step in steps:
            rows.append(rng.normal(0, 0.3, SMALL_CNN_PARAMS).astype(np.float32))
            metrics.append({"step": step, "test_accuracy": round(float(rng.uniform(0.1, 0.6)), 6),
                            "config.activation": act, "config.optimizer": "adam",
                            "train_accuracy": 0.5, "run": run})
    w = np.stack(rows)
    if nan_row is not None:
        w[nan_row, 100] = np.nan
    buf = io.BytesIO()
    np.save(buf, w)
    atomic_write(root / "weights.npy", buf.getvalue())
    lines, start = ["varname,start_idx,end_idx,shape\n"], 0
    for name, shape in SMALL_CNN_VARS:
        end = start + int(np.prod(shape))
        lines.append(f'{name},{start},{end},"{shape}"\n')
        start = end
    atomic_write(root / "layout.csv", "".join(lines))
    text = io.StringIO()
    wr = csv.DictWriter(text, fieldnames=list(metrics[0]))
    wr.writeheader()
    wr.writerows(metrics)
    atomic_write(root / "metrics.csv.gz", gzip.compress(text.getvalue().encode()))
    perm = rng.permutation(len(rows)) if split else None
    if perm is not None:
        atomic_write(root / "cifar10_split.csv", "".join(f"{p}\n" for p in perm))
    return w, metrics, perm


def write_idx(path: str | os.PathLike[str], array: NDArray) -> Path:
    """An IDX file of unsigned bytes (the MNIST format), gzipped if `path` ends in `.gz`.

    Args:
        path: the file.
        array: any shape; stored as uint8.
    """
    a = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + b"".join(struct.pack(">I", d) for d in a.shape)
    data = header + a.astype(np.uint8).tobytes()
    return atomic_write(path, gzip.compress(data) if str(path).endswith(".gz") else data)


def write_mnist_idx(
    root: str | os.PathLike[str], n_train: int = 8, n_test: int = 3, seed: int = 0, gz: bool = True,
    labels: dict[tuple[str, int], int] | None = None, shape: tuple[int, int] = (28, 28),
) -> dict[str, tuple[NDArray[np.uint8], NDArray[np.uint8]]]:
    """Fake MNIST idx files: `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.

    Args:
        root: the folder.
        n_train: training images.
        n_test: test images.
        seed: seeds the pixels.
        gz: gzip the files (as distributed) or write them plain.
        labels: `(kind, idx) -> label` (kind `"training"` / `"testing"`; default: the
            pattern `write_dws_mnist` uses, so the two agree).
        shape: image height and width.

    Returns:
        `"train"` / `"t10k"` -> `(images (n, H, W), labels (n,))`, both uint8.
    """
    rng = np.random.default_rng(seed)
    out = {}
    suffix = ".gz" if gz else ""
    for part, kind, n in (("train", "training", n_train), ("t10k", "testing", n_test)):
        images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        lab = np.asarray([labels[(kind, i)] if labels else (i * 3 + (kind == "testing")) % 10 for i in range(n)],
                         dtype=np.uint8)
        write_idx(Path(root) / f"{part}-images-idx3-ubyte{suffix}", images)
        write_idx(Path(root) / f"{part}-labels-idx1-ubyte{suffix}", lab)
        out[part] = (images, lab)
    return out
