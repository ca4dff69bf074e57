"""Loaders for the published INR data sets (DWS MNIST / F-MNIST, NFN CIFAR-10), on files
written here in the same formats."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from scalegmn.tasks.datasets import DataError
from scalegmn.tasks.datasets.dws import load_dws_inrs
from scalegmn.tasks.datasets.nfn import load_nfn_cifar_inrs
from scalegmn.tasks.datasets.testing import (
    siren_state_dict,
    write_dws_mnist,
    write_dws_splits_json,
    write_nfn_cifar,
)
from scalegmn.weightgraph import forward


def _reference(sd, x, offset):
    """The INR's function written out directly from the state dict (the DWS forward)."""
    h = torch.from_numpy(x)
    for k in range(3):
        h = h @ sd[f"seq.{k}.weight"].T + sd[f"seq.{k}.bias"]
        if k < 2:
            h = torch.sin(30.0 * h)
    return (h + offset).numpy()


@pytest.fixture()
def mnist_root(tmp_path):
    return tmp_path, write_dws_mnist(tmp_path, n_train=8, n_test=3, seed=0)


def test_dws_mnist_splits_labels_and_function(mnist_root):
    root, sds = mnist_root
    x = np.random.default_rng(1).uniform(-1, 1, (20, 2)).astype(np.float32)
    test = load_dws_inrs(root, "test")
    assert len(test) == 3
    for i in range(3):
        net, y = test[i]
        label, sd = sds[("testing", i)]
        assert y == label
        np.testing.assert_allclose(forward(net, x), _reference(sd, x, 0.5), rtol=1e-5, atol=1e-6)
    train, val = load_dws_inrs(root, "train", val_size=2), load_dws_inrs(root, "val", val_size=2)
    assert len(train) == 6 and len(val) == 2
    paths = {p.parent.parent.name for p in train.paths + val.paths}
    assert paths == {f"mnist_png_training_{(i * 3) % 10}_{i}" for i in range(8)}
    for ds in (train, val):
        for i in range(len(ds)):
            assert ds[i][1] == int(ds.paths[i].parent.parent.name.split("_")[3])
    again = load_dws_inrs(root, "val", val_size=2)
    assert again.paths == val.paths
    other = load_dws_inrs(root, "val", val_size=2, seed=5)
    assert other.paths != val.paths


def test_fmnist_splits_json_and_labels_in_state_dict(tmp_path):
    # the published file lists paths of the machine it was made on
    want = write_dws_splits_json(tmp_path, counts=(4, 2, 2), seed=2)
    assert json.loads((tmp_path / "splits.json").read_text())["test"][0].startswith("/data/elsewhere/")
    x = np.random.default_rng(3).uniform(-1, 1, (10, 2)).astype(np.float32)
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        ds = load_dws_inrs(tmp_path, split)
        assert len(ds) == n
        for i in range(n):
            label, sd = want[ds.paths[i].parent.name]
            net, y = ds[i]
            assert y == label
            np.testing.assert_allclose(forward(net, x), _reference(sd, x, 0.5), rtol=1e-5, atol=1e-6)
    assert len(load_dws_inrs(tmp_path, "all")) == 8


def test_label_disagreement_is_an_error_not_a_silent_label(tmp_path):
    sd = siren_state_dict(np.random.default_rng(0))
    sd["label"] = torch.tensor(3)
    torch.save(sd, tmp_path / "a.pth")
    (tmp_path / "s.json").write_text(json.dumps({"train": {"path": ["a.pth"], "label": [4]}}))
    with pytest.raises(DataError, match=r"a\.pth.*label 3.*says 4"):
        load_dws_inrs(tmp_path, "train", splits_file=tmp_path / "s.json")


def test_bad_files_raise_or_are_skipped(tmp_path):
    rng = np.random.default_rng(4)
    names = ["ok0", "nan", "corrupt", "wrongshape", "ok1", "missing"]
    for name in names:
        d = tmp_path / name
        d.mkdir()
        if name == "corrupt":
            (d / "m.pth").write_bytes(b"\x80\x04not really a torch file")
        elif name != "missing":
            sd = siren_state_dict(rng, nan=name == "nan", hidden=16 if name == "wrongshape" else 32)
            sd["label"] = torch.tensor(1)
            torch.save(sd, d / "m.pth")
    (tmp_path / "splits.json").write_text(json.dumps({"train": [f"{n}/m.pth" for n in names[:5]],
                                                      "test": ["missing/m.pth"]}))
    with pytest.raises(DataError, match=r"nan/m\.pth.*non-finite"):
        load_dws_inrs(tmp_path, "train")
    ds = load_dws_inrs(tmp_path, "train", on_error="skip")
    assert len(ds) == 2 and ds.report.skipped == 3
    text = "\n".join(ds.report.problems)
    assert "nan/m.pth" in text and "corrupt/m.pth" in text and "wrongshape/m.pth" in text
    assert ds.columns["row"].tolist() == [0, 4]
    with pytest.raises(DataError, match=r"splits\.json, test row 0.*missing/m\.pth.*not found"):
        load_dws_inrs(tmp_path, "test")
    with pytest.raises(DataError, match="no DWS INR folders"):
        load_dws_inrs(tmp_path / "ok0", "train")


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/scalegmn-pwned-marker", "w"))


def test_pickled_code_is_never_run(tmp_path):
    import os

    marker = "/tmp/scalegmn-pwned-marker"
    if os.path.exists(marker):
        os.remove(marker)
    d = tmp_path / "mnist_png_training_1_0" / "checkpoints"
    d.mkdir(parents=True)
    with open(d / "model_final.pth", "wb") as f:
        pickle.dump({"seq.0.weight": _Exploit()}, f)
    with pytest.raises(DataError, match="cannot be read"):
        load_dws_inrs(tmp_path, "train", val_size=0)
    assert not os.path.exists(marker)


def test_cache_is_used_and_equal(mnist_root, tmp_path, monkeypatch):
    root, _ = mnist_root
    first = load_dws_inrs(root, "test", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    import scalegmn.tasks.datasets.pth as pth

    def boom(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pth, "load_state_dict", boom)
    second = load_dws_inrs(root, "test", cache_dir=tmp_path / "cache")
    for i in range(3):
        assert first[i][0].equals(second[i][0]) and first[i][1] == second[i][1]
    # a changed file invalidates the cache
    f = next(root.glob("mnist_png_testing_*_0/checkpoints/model_final.pth"))
    torch.save(siren_state_dict(np.random.default_rng(9)), f)
    with pytest.raises(AssertionError, match="cache should have been used"):
        load_dws_inrs(root, "test", cache_dir=tmp_path / "cache")


@pytest.fixture()
def cifar_root(tmp_path):
    # NFN's files name their layers differently; the loader takes them in file order
    sds = write_nfn_cifar(tmp_path, n=10, n_aug=2, aug_below=6, n_labels=3, seed=5)
    (tmp_path / "randinit_smaller_0s" / "notes.txt").write_text("ignored")
    return tmp_path, sds


def test_nfn_cifar_splits_by_index(cifar_root):
    root, sds = cifar_root
    x = np.random.default_rng(6).uniform(-1, 1, (15, 2)).astype(np.float32)
    pts = (6, 8)
    train = load_nfn_cifar_inrs(root, "train", split_points=pts)
    val = load_nfn_cifar_inrs(root, "val", split_points=pts)
    test = load_nfn_cifar_inrs(root, "test", split_points=pts)
    assert (len(train), len(val), len(test)) == (6, 2, 2)
    for ds, first in ((train, 0), (val, 6), (test, 8)):
        for i in range(len(ds)):
            label, sd = sds[("randinit_smaller", first + i)]
            net, y = ds[i]
            assert y == label
            np.testing.assert_allclose(forward(net, x), _reference(sd, x, 0.0), rtol=1e-5, atol=1e-5)  # float32 through sin(30 z)
    aug = load_nfn_cifar_inrs(root, "train", split_points=pts, augmented=True)
    assert len(aug) == 18
    label, sd = sds[("randinit_smaller_aug1", 2)]
    net, y = aug[12 + 2]
    assert y == label
    np.testing.assert_allclose(forward(net, x), _reference(sd, x, 0.0), rtol=1e-5, atol=1e-6)
    assert len(load_nfn_cifar_inrs(root, "train", split_points=pts, augmented=1)) == 12
    assert len(load_nfn_cifar_inrs(root, "val", split_points=pts, augmented=True)) == 2
    with pytest.raises(DataError, match=r"augmented copies \[2\]"):
        load_nfn_cifar_inrs(root, "train", split_points=pts, augmented=3)


def test_nfn_duplicate_index_is_refused(cifar_root):
    root, sds = cifar_root
    torch.save(sds[("randinit_smaller", 1)][1], root / "randinit_smaller_0s" / "net1.pth")
    with pytest.raises(DataError, match="index 1 appears twice"):
        load_nfn_cifar_inrs(root, "train", split_points=(6, 8))


def test_tampered_cache_is_rebuilt_not_served(mnist_root, tmp_path):
    root, _ = mnist_root
    first = load_dws_inrs(root, "test", cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("*.safetensors")
    raw = bytearray(cache.read_bytes())
    raw[-9] ^= 0x40  # inside the arrays: still a valid safetensors file
    cache.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=rf"loader cache refused, rebuilding .*{cache.name}: checksum mismatch"):
        again = load_dws_inrs(root, "test", cache_dir=tmp_path / "cache")
    for i in range(len(first)):
        assert first[i][0].equals(again[i][0]) and first[i][1] == again[i][1]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is sound again
        load_dws_inrs(root, "test", cache_dir=tmp_path / "cache")
