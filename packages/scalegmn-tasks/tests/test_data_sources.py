"""Data sources of a run: the config forms, opening splits, detection, the cache and editing targets,
each on small files written in the published layouts."""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
import yaml

from scalegmn.tasks import data as D
from scalegmn.tasks.data import (
    DataSourceError,
    DwsData,
    NfnCifarData,
    SmallCnnZooData,
    ZooData,
    cache_dir_for,
    detect_data,
    detect_kind,
    edit_targets_source,
    open_split,
    parse_data,
    target_kind,
    zoo_shorthand,
)
from scalegmn.tasks.datasets import load_dws_inrs, load_nfn_cifar_inrs, load_small_cnn_zoo, open_zoo
from scalegmn.tasks.datasets.testing import (
    write_dws_mnist,
    write_dws_splits_json,
    write_mnist_idx,
    write_nfn_cifar,
    write_small_cnn_zoo,
)


def _same(a, b):
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.targets, b.targets)
    for i in range(len(a)):
        assert a[i][0].equals(b[i][0])


@pytest.fixture()
def mnist(tmp_path):
    root = tmp_path / "mnist-inrs"
    return root, write_dws_mnist(root, n_train=8, n_test=3, seed=0)


def test_yaml_forms_and_the_loaders_defaults():
    text = """
    - {kind: zoo, path: zoos/mnist}
    - {zoo: zoos/mnist}
    - {kind: dws, root: /data/mnist-inrs}
    - {kind: nfn_cifar, root: /data/cifar, augmented: true}
    - {kind: small_cnn_zoo, root: /data/gs, activation: tanh, split_file: none}
    """
    zoo, short, dws, nfn, cnn = (parse_data(v) for v in yaml.safe_load(text))
    assert isinstance(zoo, ZooData) and short == zoo
    assert isinstance(dws, DwsData) and isinstance(nfn, NfnCifarData) and isinstance(cnn, SmallCnnZooData)
    assert nfn.augmented is True and cnn.activation == "tanh" and cnn.split_file == "none"
    # every option left out takes the loader's own default
    for cls, loader in ((DwsData, load_dws_inrs), (NfnCifarData, load_nfn_cifar_inrs),
                        (SmallCnnZooData, load_small_cnn_zoo)):
        params, bare = inspect.signature(loader).parameters, cls(root="r")
        shared = [n for n in cls.model_fields if n in params and params[n].default is not inspect.Parameter.empty]
        assert len(shared) >= 3
        for name in shared:
            assert getattr(bare, name) == params[name].default, name
    assert dws.val_size == 5000 and cnn.step == 86
    # a config round-trips through its JSON form
    for m in (zoo, dws, nfn, cnn):
        assert parse_data(json.loads(m.model_dump_json())) == m


@pytest.mark.parametrize(("value", "match"), [
    ({"kind": "dws", "root": "r", "val_size": -1}, r"kind dws\): val_size"),
    ({"kind": "dws", "root": "r", "augmented": True}, r"augmented: Extra inputs"),
    ({"kind": "nfn_cifar", "root": "r", "split_points": [50, 45]}, "must not exceed"),
    ({"kind": "small_cnn_zoo", "root": "r", "activation": "gelu"}, "activation"),
    ({"kind": "small_cnn_zoo", "root": "r", "step": float("inf")}, "step"),
    ({"kind": "mnist", "root": "r"}, "kind 'mnist' is unknown"),
    ({"root": "r"}, "needs a kind"),
    (3, "must be a mapping"),
])
def test_bad_configs_are_one_clear_line(value, match):
    with pytest.raises(DataSourceError, match=match) as e:
        parse_data(value)
    assert "\n" not in str(e.value)


def test_zoo_shorthand_for_a_run_config():
    assert zoo_shorthand({"zoo": "z", "epochs": 2}) == {"epochs": 2, "data": {"kind": "zoo", "path": "z"}}
    assert zoo_shorthand({"data": {"kind": "zoo", "path": "z"}}) == {"data": {"kind": "zoo", "path": "z"}}
    with pytest.raises(DataSourceError, match="either zoo"):
        zoo_shorthand({"zoo": "z", "data": {"kind": "dws", "root": "r"}})


def test_a_config_field_with_the_shorthands(mnist):
    from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

    from scalegmn.tasks.data import DataField

    class Run(BaseModel):
        model_config = ConfigDict(extra="forbid")
        data: DataField
        epochs: int = 1
        _zoo = model_validator(mode="before")(zoo_shorthand)

    root, _ = mnist
    assert Run.model_validate({"zoo": "z"}).data == ZooData(path="z")
    assert Run.model_validate({"data": str(root)}).data == DwsData(root=root)
    run = Run.model_validate({"data": {"kind": "dws", "root": str(root), "val_size": 2}, "epochs": 3})
    assert run.data.val_size == 2 and Run.model_validate_json(run.model_dump_json()) == run
    with pytest.raises(ValidationError, match=r"data \(kind dws\): val_size"):
        Run.model_validate({"data": {"kind": "dws", "root": "r", "val_size": -3}})
    with pytest.raises(ValidationError, match="either zoo"):
        Run.model_validate({"zoo": "z", "data": {"kind": "dws", "root": "r"}})


def test_detects_every_published_layout(tmp_path, mnist, tiny_zoo):
    root, _ = mnist
    write_dws_splits_json(tmp_path / "fmnist")
    write_nfn_cifar(tmp_path / "cifar", n=4, n_aug=1, aug_below=2)
    write_small_cnn_zoo(tmp_path / "gs", n_runs=3)
    want = {root: DwsData, tmp_path / "fmnist": DwsData, tmp_path / "cifar": NfnCifarData,
            tmp_path / "gs": SmallCnnZooData, tiny_zoo: ZooData}
    for path, cls in want.items():
        got = detect_data(path)
        assert type(got) is cls
        assert (got.path if cls is ZooData else got.root) == path
        # a bare path in a config means the same
        assert parse_data(str(path)) == got
    assert detect_data(tmp_path / "cifar", augmented=True).augmented is True
    with pytest.raises(DataSourceError, match="augmented: Extra inputs"):
        detect_data(root, augmented=True)


def test_ambiguous_empty_and_missing_folders(tmp_path, mnist):
    root, _ = mnist
    write_nfn_cifar(root, n=2, n_aug=0)
    with pytest.raises(DataSourceError, match=r"ambiguous \(dws: 11 mnist_png_\* folders.*nfn_cifar: 2 randinit") as e:
        detect_kind(root)
    assert "kind: dws, root:" in str(e.value)
    # saying the kind settles it
    assert type(detect_data(root, kind="nfn_cifar")) is NfnCifarData
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataSourceError, match=r"no known data layout; looked for a zoo manifest\.json.*kind:"):
        detect_kind(empty)
    assert detect_data(empty, kind="dws") == DwsData(root=empty)
    np.save(empty / "weights.npy", np.zeros((2, 3), np.float32))
    (empty / "manifest.json").write_text("{}")
    with pytest.raises(DataSourceError, match=r"found only a manifest\.json that is not a scalegmn-zoo manifest, "
                                              r"weights\.npy without layout\.csv"):
        detect_kind(empty)
    with pytest.raises(DataSourceError, match="does not exist"):
        detect_kind(tmp_path / "nowhere")
    with pytest.raises(DataSourceError, match="is not a folder"):
        detect_kind(empty / "weights.npy")


def test_an_explicit_kind_must_fit_the_folder(tmp_path, mnist):
    root, _ = mnist
    with pytest.raises(DataSourceError, match=r"does not look like small_cnn_zoo data \(dws: 11 mnist_png"):
        detect_data(root, kind="small_cnn_zoo")
    with pytest.raises(DataSourceError, match="kind 'cifar' is unknown"):
        detect_data(root, kind="cifar")


def test_open_split_is_the_loader_with_its_defaults(tmp_path, mnist, tiny_zoo):
    root, _ = mnist
    dws = DwsData(root=root, val_size=2, cache=False)
    for s in ("train", "val", "test"):
        _same(open_split(dws, s), load_dws_inrs(root, s, val_size=2))
    write_dws_splits_json(tmp_path / "fmnist")
    _same(open_split(detect_data(tmp_path / "fmnist"), "val"), load_dws_inrs(tmp_path / "fmnist", "val"))
    write_nfn_cifar(tmp_path / "cifar", n=10, n_aug=2, aug_below=6)
    nfn = NfnCifarData(root=tmp_path / "cifar", augmented=True, split_points=(6, 8))
    _same(open_split(nfn, "train"), load_nfn_cifar_inrs(tmp_path / "cifar", "train", augmented=True,
                                                        split_points=(6, 8)))
    assert len(open_split(nfn, "train")) == 18 and len(open_split(nfn, "test")) == 2
    write_small_cnn_zoo(tmp_path / "gs", n_runs=12)
    cnn = SmallCnnZooData(root=tmp_path / "gs", activation="relu")
    _same(open_split(cnn, "test"), load_small_cnn_zoo(tmp_path / "gs", "test", "relu"))
    _same(open_split(ZooData(path=tiny_zoo), "val"), open_zoo(tiny_zoo, "val"))


def test_target_kind(tmp_path, mnist, tiny_zoo):
    root, _ = mnist
    assert target_kind(DwsData(root=root)) == "classification"
    assert target_kind(NfnCifarData(root=root)) == "classification"
    assert target_kind(SmallCnnZooData(root=root)) == "regression"
    assert target_kind(ZooData(path=tiny_zoo)) == "classification"
    # the zoo's answer comes from its manifest: the same zoo relabelled as regression says so
    other = tmp_path / "regression-zoo"
    shutil.copytree(tiny_zoo, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["target"] = {"name": "test_accuracy", "kind": "regression"}
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert target_kind(ZooData(path=other)) == "regression"


def test_cache_under_the_data_root_and_its_fallbacks(tmp_path, mnist, monkeypatch):
    root, _ = mnist
    data = DwsData(root=root, val_size=2)
    assert cache_dir_for(data) == root / ".scalegmn-cache"
    first = open_split(data, "val")
    assert len(list((root / ".scalegmn-cache").glob("*.safetensors"))) == 1
    # the cache folder does not disturb detection
    assert detect_kind(root) == "dws"
    import scalegmn.tasks.datasets.pth as pth

    def boom(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pth, "load_state_dict", boom)
    _same(open_split(data, "val"), first)
    with pytest.raises(AssertionError, match="cache should have been used"):
        open_split(DwsData(root=root, val_size=2, cache=False), "val")
    monkeypatch.undo()
    # a read-only data root: the user cache folder
    monkeypatch.setattr(D, "_writable", lambda folder: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir_for(data) == tmp_path / "xdg" / "scalegmn" / "datasets"
    open_split(data, "test")
    assert len(list((tmp_path / "xdg" / "scalegmn" / "datasets").glob("*.safetensors"))) == 1
    assert cache_dir_for(DwsData(root=root, cache_dir=tmp_path / "mine")) == tmp_path / "mine"
    assert cache_dir_for(DwsData(root=root, cache=False)) is None
    assert cache_dir_for(SmallCnnZooData(root=root)) is None


@pytest.mark.parametrize("cached", [False, True])
def test_edit_targets_are_the_mnist_images_named_by_each_folder(tmp_path, mnist, cached):
    root, written = mnist
    pics = write_mnist_idx(tmp_path / "idx", n_train=8, n_test=3, seed=1)
    data = DwsData(root=root, val_size=2, images=tmp_path / "idx", cache=cached)
    if cached:  # a second open memory-maps the cache, which keeps no file paths
        for s in ("train", "val", "test"):
            open_split(data, s)
    dss = {s: open_split(data, s) for s in ("train", "val", "test")}
    assert hasattr(dss["val"], "paths") != cached
    got = edit_targets_source(data, datasets=dss)
    for s, ds in dss.items():
        assert got[s].shape == (len(ds), 28, 28) and got[s].dtype == np.float32
        for i, path in enumerate(D.inr_paths(data, ds)):
            _, kind, label, idx = path.parent.parent.name.rsplit("_", 3)
            images, labels = pics["train" if kind == "training" else "t10k"]
            np.testing.assert_array_equal(got[s][i], images[int(idx)].astype(np.float32) / 255)
            assert int(labels[int(idx)]) == int(label) == ds.targets[i] == written[(kind, int(idx))][0]
    # the validation INRs are a seeded draw, not the first images: matching is by name
    assert not np.array_equal(got["val"], pics["train"][0][:2].astype(np.float32) / 255)
    # the same without datasets given, and with images as an argument
    again = edit_targets_source(DwsData(root=root, val_size=2), images=tmp_path / "idx", splits=("test",))
    np.testing.assert_array_equal(again["test"], got["test"])


def test_edit_targets_fall_back_to_renders_and_refuse_what_does_not_match(tmp_path, mnist):
    root, _ = mnist
    data = DwsData(root=root, val_size=2, cache=False)
    assert edit_targets_source(data) == {"train": None, "val": None, "test": None}
    # plain, dotted file names are accepted too
    idx = tmp_path / "idx"
    write_mnist_idx(idx, n_train=8, n_test=3, gz=False)
    for f in idx.iterdir():
        f.rename(f.with_name(f.name.replace("-idx", ".idx")))
    assert edit_targets_source(data, idx, splits=("test",))["test"].shape == (3, 28, 28)
    # labels that disagree with the folder names: the wrong idx files
    wrong = tmp_path / "wrong"
    write_mnist_idx(wrong, n_train=8, n_test=3, labels={("training", i): 9 - i for i in range(8)}
                    | {("testing", i): (i * 3 + 1) % 10 for i in range(3)})
    with pytest.raises(DataSourceError, match=r"mnist_png_training_\d_\d.*has label \d but MNIST training image"):
        edit_targets_source(data, wrong, splits=("train",))
    assert edit_targets_source(data, wrong, splits=("test",))["test"] is not None
    short = tmp_path / "short"
    write_mnist_idx(short, n_train=3, n_test=3)
    with pytest.raises(DataSourceError, match=r"names MNIST training image [3-7], but .* holds 3"):
        edit_targets_source(data, short, splits=("train",))
    (short / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataSourceError, match=r"no t10k-images-idx3-ubyte\[\.gz\]"):
        edit_targets_source(data, short, splits=("test",))
    write_dws_splits_json(tmp_path / "fmnist")
    with pytest.raises(DataSourceError, match=r"fmnist_inr_0/model\.pth \(split train\) is not in a mnist_png_"):
        edit_targets_source(DwsData(root=tmp_path / "fmnist", cache=False), idx, splits=("train",))
    write_nfn_cifar(tmp_path / "cifar", n=2, n_aug=0)
    with pytest.raises(DataSourceError, match="only applies to DWS MNIST INRs, not to nfn_cifar"):
        edit_targets_source(NfnCifarData(root=tmp_path / "cifar"), idx)
