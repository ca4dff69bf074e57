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


def test_recipes_are_named_validated_and_default_by_source():
    from pydantic import ValidationError

    from scalegmn.tasks.zoo import RECIPES, INRZooOptions, default_recipe

    assert default_recipe("mnist5k") == default_recipe("fashion-mnist") == "dws"
    assert default_recipe("digits") == default_recipe("my_images") == "siren"
    dws = INRZooOptions().resolved("mnist5k")
    assert (dws.recipe, dws.steps, dws.lr, dws.psnr_stop) == ("dws", 1000, 5e-4, 40.0)
    siren = INRZooOptions().resolved("digits")
    assert (siren.recipe, siren.steps, siren.lr, siren.psnr_stop) == ("siren", 500, 1e-3, None)
    mine = INRZooOptions(recipe="dws", steps=200).resolved("digits")
    assert (mine.recipe, mine.steps, mine.lr) == ("dws", 200, RECIPES["dws"].lr)
    with pytest.raises(ValidationError, match="recipe"):
        INRZooOptions(recipe="published")
    with pytest.raises(ValidationError, match="psnr_stop"):
        INRZooOptions(psnr_stop=-1.0)


def test_unknown_recipe_is_one_clear_line(tmp_path, small_source):
    with pytest.raises(ValueError, match=r"unknown INR recipe 'dwsnets'; use one of dws, siren"):
        build_inr_zoo(tmp_path / "z", small_source, count=4, recipe="dwsnets", progress=False)
    assert not (tmp_path / "z").exists()


def test_dws_recipe_zoo_records_recipe_and_per_network_stopping(tmp_path, small_source):
    from scalegmn.tasks.zoo.siren import dws_init, siren_init
    from scalegmn.tasks.zoo.store import read_manifest

    out = tmp_path / "dws"
    m, _ = build_inr_zoo(out, small_source, count=8, recipe="dws", steps=0, shard_size=4, batch_size=4,
                         progress=False)
    assert m.recipe["name"] == "dws" and m.recipe["init"] == "dws" and m.recipe["psnr_stop"] == 40.0
    assert m.recipe["steps"] == 0 and m.recipe["overridden"] == ["steps"] and m.recipe["lr"] == 5e-4
    assert read_manifest(out).recipe == m.recipe  # round trip through manifest.json
    assert m.build["recipe"] == "dws"
    zoo = Zoo(out)
    assert {"steps", "stopped", "psnr"} <= set(zoo.columns)
    assert np.all(zoo.columns["steps"] == 0)
    # With zero steps the stored networks are the recipe's initialisation of each id.
    for i in range(len(zoo)):
        w, b = dws_init((2, 32, 32, 1), 30.0, np.random.default_rng([0, i]))
        net = zoo.network(i)
        for k in range(3):
            np.testing.assert_allclose(net.weights[k], w[k], rtol=1e-6)
            np.testing.assert_allclose(net.biases[k], b[k], rtol=1e-6, atol=0)
        # Negative control: the SIREN recipe's initialisation of the same id is another network.
        ws, _ = siren_init((2, 32, 32, 1), 30.0, np.random.default_rng([0, i]))
        assert not np.allclose(net.weights[0], ws[0], rtol=1e-3)


def test_early_stopping_is_recorded_per_network(tmp_path):
    rng = np.random.default_rng(0)
    easy = np.clip(127 + rng.integers(-2, 3, size=(4, 1, 1)), 0, 255) * np.ones((1, 8, 8))
    hard = rng.integers(0, 256, size=(4, 8, 8))
    src = ImageSource.from_array(np.concatenate([easy, hard]).astype(np.uint8), np.arange(8) % 2,
                                 name="easy-hard")
    build_inr_zoo(tmp_path / "z", src, count=8, recipe="dws", steps=150, shard_size=8, batch_size=3,
                  widths=(2, 16, 16, 1), progress=False, val_fraction=0.0, test_fraction=0.0)
    zoo = Zoo(tmp_path / "z")
    easy_ids = zoo.columns["group"] < 4
    stopped = zoo.columns["stopped"].astype(bool)
    assert stopped[easy_ids].all() and not stopped[~easy_ids].any()
    assert np.all(zoo.columns["psnr"][stopped] >= 40.0) and np.all(zoo.columns["psnr"][~stopped] < 40.0)
    assert np.all(zoo.columns["steps"][stopped] < 150) and np.all(zoo.columns["steps"][~stopped] == 150)
