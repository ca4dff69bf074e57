"""INR and CNN zoo builders: resumable, seeded, and recording what the networks do."""

from __future__ import annotations

import numpy as np
import pytest

from scalegmn.tasks.sources import ImageSource, digits
from scalegmn.tasks.zoo import Zoo, ZooError, build_cnn_zoo, build_inr_zoo
from scalegmn.tasks.zoo.cnn import _prepare_images
from scalegmn.tasks.zoo.siren import coordinate_grid
from scalegmn.weightgraph import forward


@pytest.fixture(scope="module")
def small_source() -> ImageSource:
    d = digits()
    return ImageSource.from_array(d.images[:60], d.labels[:60], name="digits60")


class Stop(Exception):
    """Stands for a build killed between two shards."""


INR = dict(steps=25, shard_size=8, batch_size=4, progress=False)


def test_inr_zoo_records_label_psnr_and_function(tmp_path, small_source):
    m, stats = build_inr_zoo(tmp_path / "z", small_source, count=20, **INR)
    zoo = Zoo(tmp_path / "z")
    assert len(zoo) == 20 and stats.networks_built == 20 and m.kind == "inr"
    spec = zoo.specs[0]
    assert spec.widths == [2, 32, 32, 1] and spec.output_offset == 0.5 and spec.layers[0].w0 == 30.0
    grid = coordinate_grid(8, 8).numpy()
    for i in (0, 13):
        img = small_source.as_float(int(zoo.columns["group"][i]))
        assert zoo.targets[i] == small_source.labels[zoo.columns["group"][i]]
        out = forward(zoo.network(i), grid)[:, 0].reshape(8, 8)
        mse = float(np.mean((out - img) ** 2))
        np.testing.assert_allclose(mse, zoo.columns["mse"][i], rtol=1e-3)
        np.testing.assert_allclose(zoo.columns["psnr"][i], 10 * np.log10(1 / mse), rtol=1e-3)


def test_inr_build_interrupted_and_resumed_equals_uninterrupted(tmp_path, small_source):
    build_inr_zoo(tmp_path / "full", small_source, count=20, **INR)

    def stop(rec):
        if rec.index == 1:
            raise Stop

    with pytest.raises(Stop):
        build_inr_zoo(tmp_path / "part", small_source, count=20, on_shard=stop, **INR)
    _, stats = build_inr_zoo(tmp_path / "part", small_source, count=20, resume=True, **INR)
    assert stats.shards_skipped == 2 and stats.shards_built == 1
    a, b = Zoo(tmp_path / "full"), Zoo(tmp_path / "part")
    for i in range(20):
        assert a.network(i).equals(b.network(i))
    for k in a.columns:
        np.testing.assert_array_equal(a.columns[k], b.columns[k])
    with pytest.raises(Stop):
        build_inr_zoo(tmp_path / "part2", small_source, count=20, on_shard=stop, **INR)
    with pytest.raises(ZooError, match=r"build\.steps: 25 != 26"):
        build_inr_zoo(tmp_path / "part2", small_source, count=20, resume=True, **{**INR, "steps": 26})


def test_splits_are_fixed_by_seed_and_respect_an_official_test_set(tmp_path, small_source):
    from scalegmn.tasks.zoo import INRZooOptions, plan_inr_zoo

    opts = INRZooOptions(count=60, val_fraction=0.2, test_fraction=0.1)
    _m1, t1 = plan_inr_zoo(small_source, opts)
    _m2, t2 = plan_inr_zoo(small_source, opts)
    s1 = np.concatenate([t.payload["split"] for t in t1])
    assert np.array_equal(s1, np.concatenate([t.payload["split"] for t in t2]))
    assert np.bincount(s1).tolist() == [42, 12, 6]
    _, t3 = plan_inr_zoo(small_source, opts.model_copy(update={"seed": 1}))
    assert not np.array_equal(s1, np.concatenate([t.payload["split"] for t in t3]))
    is_test = np.arange(60) >= 45
    src = ImageSource.from_array(small_source.images, small_source.labels, is_test=is_test)
    _, t4 = plan_inr_zoo(src, opts)
    img = np.concatenate([t.payload["image_index"] for t in t4])
    split = np.concatenate([t.payload["split"] for t in t4])
    assert np.array_equal(split == 2, img >= 45)
    assert np.sum(split == 1) == 9  # 20 % of the 45 non-test images


def test_inr_count_larger_than_source_is_refused(tmp_path, small_source):
    with pytest.raises(ValueError, match="only 60 images"):
        build_inr_zoo(tmp_path / "z", small_source, count=61, **INR)


def test_cnn_zoo_targets_are_the_accuracy_of_the_stored_networks(tmp_path, small_source):
    d = digits()
    src = ImageSource.from_array(d.images[:400], d.labels[:400], name="digits400")
    m, _ = build_cnn_zoo(
        tmp_path / "c", src, count=4, channels=4, epochs=(2,), batch_sizes=(32,),
        train_size_range=(100, 200), checkpoints=(0.0, 0.5, 1.0), test_size=60, shard_size=2,
        lr_range=(1e-2, 1e-2), progress=False,
    )
    zoo = Zoo(tmp_path / "c")
    assert len(zoo) == 12 and m.target.kind == "regression"
    assert {s.layers[0].activation for s in zoo.specs} <= {"relu", "tanh"}
    rng = np.random.default_rng(m.seed)
    perm = rng.permutation(len(src))
    test_ids = np.sort(perm[:60])
    x = _prepare_images(src, test_ids, 8)
    y = src.labels[test_ids]
    for i in range(len(zoo)):
        net = zoo.network(i)
        assert net.spec.layers[0].activation == m.categories["activation"][zoo.columns["activation"][i]]
        acc = float(np.mean(forward(net.astype(np.float64), x.astype(np.float64)).argmax(1) == y))
        assert abs(acc - zoo.targets[i]) <= 1.5 / 60, (i, acc, zoo.targets[i])
    # Checkpoints of one run share a split and appear in order of training.
    for g in np.unique(zoo.columns["group"]):
        sel = zoo.columns["group"] == g
        assert len(set(zoo.columns["split"][sel])) == 1
        assert zoo.columns["step"][sel].tolist() == sorted(zoo.columns["step"][sel].tolist())
        assert zoo.columns["step"][sel][0] == 0


def test_parallel_build_equals_serial_build(tmp_path, small_source):
    build_inr_zoo(tmp_path / "a", small_source, count=12, **INR)
    build_inr_zoo(tmp_path / "b", small_source, count=12, workers=2, **INR)
    a, b = Zoo(tmp_path / "a"), Zoo(tmp_path / "b")
    for i in range(12):
        assert a.network(i).equals(b.network(i))


def test_cnn_build_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    d = digits()
    src = ImageSource.from_array(d.images[:200], d.labels[:200], name="digits200")
    kw = dict(count=4, channels=3, epochs=(1,), batch_sizes=(32,), train_size_range=(60, 120),
              checkpoints=(0.5, 1.0), test_size=40, shard_size=1, progress=False)
    build_cnn_zoo(tmp_path / "full", src, **kw)

    def stop(rec):
        if rec.index == 1:
            raise Stop

    with pytest.raises(Stop):
        build_cnn_zoo(tmp_path / "part", src, on_shard=stop, **kw)
    _, stats = build_cnn_zoo(tmp_path / "part", src, resume=True, **kw)
    assert stats.shards_skipped == 2 and stats.shards_built == 2
    a, b = Zoo(tmp_path / "full"), Zoo(tmp_path / "part")
    for i in range(len(a)):
        assert a.network(i).equals(b.network(i))
    for k in a.columns:
        np.testing.assert_array_equal(a.columns[k], b.columns[k])
