"""`scalegmn zoo build|info` from the command line."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from scalegmn.tasks.zoo import Zoo
from scalegmn.tasks.zoo.cli import app

runner = CliRunner()


def _text(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _images(tmp_path):
    from scalegmn.tasks.sources import digits

    d = digits()
    path = tmp_path / "imgs.npz"
    np.savez(path, images=d.images[:30], labels=d.labels[:30])
    return str(path)


def test_build_inr_resume_and_info(tmp_path):
    src = _images(tmp_path)
    out = tmp_path / "zoo"
    args = ["build", "inr", str(out), "--source", src, "--count", "12", "--steps", "5",
            "--workers", "1", "--no-compile", "--shard-size", "4", "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "built 12 INRs" in _text(r) and "train 10, val 1, test 1" in _text(r)
    assert len(Zoo(out)) == 12
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "already holds a zoo" in _text(r)
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 0 and "built 0 INRs" in _text(r) and "3 shards from an earlier run" in _text(r)
    r = runner.invoke(app, ["info", str(out)])
    assert r.exit_code == 0
    assert "2-32-32-1 (sine), 12 networks" in _text(r) and "psnr" in _text(r) and "target histogram" in _text(r)


def test_build_cnn_and_info(tmp_path):
    out = tmp_path / "cnn"
    r = runner.invoke(app, ["build", "cnn", str(out), "--source", _images(tmp_path), "--count", "2",
                            "--channels", "3", "--epochs", "1", "--checkpoints", "0,1", "--test-size", "10",
                            "--workers", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "built 4 CNN checkpoints" in _text(r) and "test_accuracy (regression)" in _text(r)


def test_errors_are_messages_not_tracebacks(tmp_path):
    r = runner.invoke(app, ["info", str(tmp_path)])
    assert r.exit_code == 2 and "is not a zoo" in _text(r)
    r = runner.invoke(app, ["build", "inr", str(tmp_path / "z"), "--source", "nope", "--quiet"])
    assert r.exit_code == 2 and "unknown source 'nope'" in _text(r)
    r = runner.invoke(app, ["build", "inr", str(tmp_path / "z"), "--source", "digits", "--count",
                            "5000", "--quiet"])
    assert r.exit_code == 2 and "only 1797 images" in _text(r)


def test_build_inr_recipe_flag(tmp_path):
    from scalegmn.tasks.zoo.store import read_manifest

    src = _images(tmp_path)
    base = ["build", "inr", "--source", src, "--count", "4", "--steps", "3", "--workers", "1",
            "--no-compile", "--quiet"]
    r = runner.invoke(app, [*base[:2], str(tmp_path / "dws"), *base[2:], "--recipe", "dws"])
    assert r.exit_code == 0, r.output
    assert "dws (lr 0.0005, at most 3 steps, stop at 40.0 dB)" in _text(r)
    assert read_manifest(tmp_path / "dws").recipe["name"] == "dws"
    assert "steps" in Zoo(tmp_path / "dws").columns
    # Without the flag a .npz source gets the SIREN recipe.
    r = runner.invoke(app, [*base[:2], str(tmp_path / "default"), *base[2:]])
    assert r.exit_code == 0 and read_manifest(tmp_path / "default").recipe["name"] == "siren"
    r = runner.invoke(app, [*base[:2], str(tmp_path / "bad"), *base[2:], "--recipe", "published"])
    assert r.exit_code == 2 and "--recipe 'published' is not a recipe; use one of dws, siren" in _text(r)
    assert "Traceback" not in r.output and not (tmp_path / "bad").exists()
