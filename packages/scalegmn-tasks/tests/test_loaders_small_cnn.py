"""The Small CNN Zoo loader, on files written here in its exact format (TensorFlow layout)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from scalegmn.tasks.datasets import DataError
from scalegmn.tasks.datasets.small_cnn import load_small_cnn_zoo
from scalegmn.tasks.datasets.testing import SMALL_CNN_PARAMS, SMALL_CNN_VARS, write_small_cnn_zoo
from scalegmn.weightgraph import forward


def _tf_forward(row, x_nhwc, act):
    """The stored network evaluated straight from its TensorFlow-layout row (NHWC, SAME, stride 2)."""
    params, start = {}, 0
    for name, shape in SMALL_CNN_VARS:
        end = start + int(np.prod(shape))
        params[name] = row[start:end].reshape(shape).astype(np.float64)
        start = end
    h = x_nhwc.astype(np.float64)
    f = np.maximum if act == "relu" else None
    for layer in ("conv2d", "conv2d_1", "conv2d_2"):
        k, b = params[f"sequential/{layer}/kernel:0"], params[f"sequential/{layer}/bias:0"]
        n, hh, ww, _ = h.shape
        oh, ow = -(-hh // 2), -(-ww // 2)
        ph, pw = max((oh - 1) * 2 + 3 - hh, 0), max((ow - 1) * 2 + 3 - ww, 0)
        hp = np.pad(h, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        out = np.zeros((n, oh, ow, k.shape[3]))
        for i in range(oh):
            for j in range(ow):
                patch = hp[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]
                out[:, i, j, :] = np.einsum("nabc,abco->no", patch, k) + b
        h = f(out, 0) if f is not None else np.tanh(out)
    pooled = h.mean(axis=(1, 2))
    return pooled @ params["sequential/dense/kernel:0"] + params["sequential/dense/bias:0"]


def _protocol(perm, metrics, split, activation=None):
    """The published protocol, step by step as the reference implementation does it."""
    order = [int(p) for p in perm if metrics[int(p)]["step"] == 86]
    half = int(0.5 * len(order))
    idx = list(range(half))
    random.Random(0).shuffle(idx)
    parts = {"test": list(range(half, len(order))), "train": idx[: int(0.8 * half)],
             "val": idx[int(0.8 * half) :]}
    rows = [order[i] for i in parts[split]]
    if activation:
        rows = [r for r in rows if metrics[r]["config.activation"] == activation]
    return rows


def test_loaded_cnn_computes_what_the_stored_one_computes(tmp_path):
    w, metrics, _ = write_small_cnn_zoo(tmp_path)
    ds = load_small_cnn_zoo(tmp_path, "all", step=None, split_file="none")
    assert len(ds) == 24
    x = np.random.default_rng(1).normal(size=(3, 32, 32, 1))
    for i in (0, 1, 5, 6):
        net, y = ds[i]
        row = int(ds.columns["row"][i])
        assert y == pytest.approx(metrics[row]["test_accuracy"])
        assert net.spec.layers[0].activation == metrics[row]["config.activation"]
        got = forward(net.astype(np.float64), x.transpose(0, 3, 1, 2))
        np.testing.assert_allclose(got, _tf_forward(w[row], x, metrics[row]["config.activation"]),
                                   rtol=1e-9, atol=1e-12)
    # Negative control: reading the kernel without the TF -> PyTorch transpose computes another function.
    from scalegmn.weightgraph import Network

    net = ds[0][0]
    wrong = Network(net.spec, [w_.transpose(0, 1, 3, 2) if w_.ndim == 4 else w_ for w_ in net.weights], net.biases)
    assert not np.allclose(forward(wrong.astype(np.float64), x.transpose(0, 3, 1, 2)),
                           _tf_forward(w[int(ds.columns["row"][0])], x, metrics[0]["config.activation"]))


@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_split_protocol(tmp_path, split, activation):
    _w, metrics, perm = write_small_cnn_zoo(tmp_path, n_runs=40)
    ds = load_small_cnn_zoo(tmp_path, split, activation=activation)
    assert ds.columns["row"].tolist() == _protocol(perm, metrics, split, activation)
    assert np.all(ds.columns["step"] == 86)
    np.testing.assert_allclose(ds.targets, [metrics[r]["test_accuracy"] for r in ds.columns["row"]])
    if activation:
        assert {s.layers[0].activation for s in ds.specs} == {activation}


def test_splits_partition_the_final_rows(tmp_path):
    _, _metrics, _ = write_small_cnn_zoo(tmp_path, n_runs=40)
    rows = [set(load_small_cnn_zoo(tmp_path, s).columns["row"].tolist()) for s in ("train", "val", "test")]
    assert sum(len(r) for r in rows) == 40 and not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    assert [len(r) for r in rows] == [16, 4, 20]


def test_nan_rows_raise_or_are_skipped(tmp_path):
    write_small_cnn_zoo(tmp_path, n_runs=6, steps=(86,), nan_row=4, split=False)
    with pytest.raises(DataError, match=r"weights\.npy, row 4: non-finite"):
        load_small_cnn_zoo(tmp_path, "all")
    ds = load_small_cnn_zoo(tmp_path, "all", on_error="skip")
    assert len(ds) == 5 and ds.report.skipped == 1 and 4 not in ds.columns["row"]


def test_bad_files_are_named(tmp_path):
    write_small_cnn_zoo(tmp_path, n_runs=4, steps=(86,))
    (tmp_path / "cifar10_split.csv").write_text("0\n1\n1\n3\n")
    with pytest.raises(DataError, match="row id 1 appears more than once"):
        load_small_cnn_zoo(tmp_path, "all")
    (tmp_path / "cifar10_split.csv").write_text("0\n1\nx\n3\n")
    with pytest.raises(DataError, match=r"cifar10_split\.csv, line 3"):
        load_small_cnn_zoo(tmp_path, "all")
    (tmp_path / "cifar10_split.csv").unlink()
    text = (tmp_path / "layout.csv").read_text().replace("(16, 10)", "(16, 9)").replace(",4970,", ",4960,")
    (tmp_path / "layout.csv").write_text(text)
    with pytest.raises(DataError, match=r"layout\.csv"):
        load_small_cnn_zoo(tmp_path, "all")
    write_small_cnn_zoo(tmp_path, n_runs=4, steps=(86,), split=False)
    np.save(tmp_path / "weights.npy", np.zeros((3, SMALL_CNN_PARAMS), np.float32))
    with pytest.raises(DataError, match="has 4 rows but"):
        load_small_cnn_zoo(tmp_path, "all")
    (tmp_path / "metrics.csv.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"metrics\.csv\.gz"):
        load_small_cnn_zoo(tmp_path, "all")
    (tmp_path / "weights.npy").unlink()
    with pytest.raises(DataError, match=r"missing file .*weights\.npy"):
        load_small_cnn_zoo(tmp_path, "all")
