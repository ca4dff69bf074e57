"""Shared fixtures: tiny zoos built once per session (the training tests of both backends use them)."""

from __future__ import annotations

import pytest

from scalegmn.tasks.zoo import build_inr_zoo


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "digits"
    build_inr_zoo(out, "digits", workers=1, count=48, steps=10, seed=0, progress=False,
                  val_fraction=0.25, test_fraction=0.25)
    return out


@pytest.fixture(scope="session")
def tiny_cnn_zoo(tmp_path_factory):
    from scalegmn.tasks.sources import ImageSource, digits
    from scalegmn.tasks.zoo import build_cnn_zoo

    d = digits()
    src = ImageSource.from_array(d.images[:400], d.labels[:400], name="digits400")
    out = tmp_path_factory.mktemp("cnn") / "c"
    build_cnn_zoo(out, src, count=12, channels=4, epochs=(2,), batch_sizes=(32,), train_size_range=(100, 200),
                  checkpoints=(0.0, 0.5, 1.0), test_size=60, shard_size=4, lr_range=(1e-3, 3e-2),
                  progress=False)
    return out
