"""Exact geometric augmentation of INRs: the map, its draws, and runs that use it."""

from __future__ import annotations

import numpy as np
import pytest

from scalegmn.tasks.augment import AugmentError, InrAugment, random_similarity, transform_inr
from scalegmn.tasks.train import RunConfig, TrainError, train_run
from scalegmn.weightgraph import NetworkSpec, ScaleGMNConfig, forward, random_network


def _siren(seed: int):  # type: ignore[no-untyped-def]
    return random_network(NetworkSpec.siren([2, 16, 16, 1]), rng=seed, dtype=np.float64)


@pytest.mark.parametrize("seed", range(4))
def test_the_transformed_inr_is_the_moved_image(seed: int) -> None:
    f = _siren(seed)
    rng = np.random.default_rng(seed)
    a, t = random_similarity(rng, InrAugment(rotate_deg=30, scale=0.2, shift=0.2))
    x = rng.uniform(-1, 1, (64, 2))
    g = transform_inr(f, a, t)
    moved = forward(f, x @ a.T + t)
    assert np.max(np.abs(forward(g, x) - moved)) <= 1e-10 * np.max(np.abs(moved))
    # negative control: the transposed matrix is another rotation and another image
    wrong = transform_inr(f, a.T, t)
    assert np.max(np.abs(forward(wrong, x) - moved)) > 1e-3
    assert all(np.array_equal(w, v) for w, v in zip(g.weights[1:], f.weights[1:], strict=True))  # only layer 1 changes


def test_the_draws_stay_in_their_ranges() -> None:
    aug = InrAugment(rotate_deg=10, scale=0.1, shift=0.05)
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, t = random_similarity(rng, aug)
        s = np.sqrt(abs(np.linalg.det(a)))
        theta = np.degrees(np.arctan2(a[1, 0], a[0, 0]))
        assert 0.9 <= s <= 1.1 and abs(theta) <= 10 and np.all(np.abs(t) <= 0.05)
        assert np.allclose(a @ a.T, s * s * np.eye(2))  # a similarity
    a, t = random_similarity(rng, InrAugment())
    assert np.array_equal(a, np.eye(2)) and not t.any() and not InrAugment().active


def test_only_inrs_of_coordinates_are_transformed() -> None:
    net = random_network(NetworkSpec.mlp([3, 4, 2], activation="relu"), rng=0)
    with pytest.raises(AugmentError, match=r"2-D coordinates.*3 inputs"):
        transform_inr(net, np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="rotate_deg"):
        InrAugment(rotate_deg=-1)


def _cfg(zoo, **kw):  # type: ignore[no-untyped-def]
    base = dict(zoo=str(zoo), model="scalegmn", epochs=2, batch_size=8, warmup_steps=2, threads=1,
                gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=10),
                augment=InrAugment(rotate_deg=15, scale=0.1, shift=0.1))
    return RunConfig(**{**base, **kw})


def test_an_augmented_run_trains_on_new_networks_and_resumes_exactly(tiny_zoo, tmp_path) -> None:
    plain = train_run(_cfg(tiny_zoo, augment=None), progress=False)
    full = train_run(_cfg(tiny_zoo), out=tmp_path / "full", progress=False)
    assert [h["loss"] for h in full["history"]] != [h["loss"] for h in plain["history"]]

    def kill(row):  # type: ignore[no-untyped-def]
        if row["epoch"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(_cfg(tiny_zoo), out=tmp_path / "part", progress=False, on_epoch=kill)
    resumed = train_run(_cfg(tiny_zoo), out=tmp_path / "part", resume=True, progress=False)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]


def test_augmenting_a_cnn_zoo_is_refused(tiny_cnn_zoo) -> None:
    cfg = _cfg(tiny_cnn_zoo, gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=1, d_edge_in=9))
    with pytest.raises(TrainError, match="augment transforms INRs"):
        train_run(cfg, progress=False)
