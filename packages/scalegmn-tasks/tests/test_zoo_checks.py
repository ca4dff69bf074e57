"""A zoo is checked against its manifest: architecture, class count, splits, shard bytes and values."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from scalegmn.tasks.cli import app as main_app
from scalegmn.tasks.zoo import Zoo, ZooError
from scalegmn.tasks.zoo.cli import app
from scalegmn.tasks.zoo.store import read_safetensors, safetensors_bytes

runner = CliRunner()


@pytest.fixture()
def zoo(tiny_zoo, tmp_path):
    root = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, root)
    Zoo(root, verify="open")  # control: the untouched copy passes every check
    return root


def _edit_manifest(root, edit) -> None:
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())
    assert "Traceback" not in text
    return text


def test_activation_the_shards_do_not_hold_is_refused_at_open(zoo):
    def relu(m):
        for layer in m["specs"][0]["layers"][:-1]:
            layer["activation"] = "relu"

    _edit_manifest(zoo, relu)
    with pytest.raises(ZooError, match=r"manifest \(specs\[0\]\) says activations \['relu'.* holds \['sine'"):
        Zoo(zoo)


def test_wrong_class_count_is_one_line_in_zoo_info(zoo):
    _edit_manifest(zoo, lambda m: m["target"].update(n_classes=5))
    with pytest.raises(ZooError, match=r"n_classes is 5 but the labels run from 0 to 9"):
        Zoo(zoo)
    assert "n_classes is 5" in _one_line(runner.invoke(app, ["info", str(zoo)]))


def test_wrong_split_counts_are_refused(zoo):
    _edit_manifest(zoo, lambda m: m["split_counts"].update(train=m["split_counts"]["train"] + 3))
    with pytest.raises(ZooError, match=r"split_counts says .* but the split column holds"):
        Zoo(zoo)


def test_info_verify_checks_every_shard(zoo):
    n = len(json.loads((zoo / "manifest.json").read_text())["shards"])
    r = runner.invoke(app, ["info", str(zoo), "--verify"])
    assert r.exit_code == 0 and f"verified {n} shards" in " ".join(r.output.split()), r.output
    shard = sorted((zoo / "shards").glob("*.safetensors"))[-1]
    raw = bytearray(shard.read_bytes())
    raw[-7] ^= 0x10
    shard.write_bytes(bytes(raw))
    assert runner.invoke(app, ["info", str(zoo)]).exit_code == 0  # without --verify no shard is read
    text = _one_line(runner.invoke(app, ["info", str(zoo), "--verify"]))
    assert f"{shard.name}: checksum mismatch" in text


def test_nan_in_a_shard_names_the_file_and_the_network(zoo):
    m = json.loads((zoo / "manifest.json").read_text())
    rec = m["shards"][0]
    path = zoo / rec["file"]
    arrays, meta = read_safetensors(path)
    arrays["w1"] = arrays["w1"].copy()
    arrays["w1"][2, 0, 0] = np.nan
    data = safetensors_bytes(arrays, meta)
    path.write_bytes(data)  # a writer that skipped the finiteness check, with a correct checksum
    import hashlib

    rec["sha256"], rec["nbytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (zoo / "manifest.json").write_text(json.dumps(m))
    bad = rec["start"] + 2
    with pytest.raises(ZooError, match=rf"{path.name}: network {bad} has non-finite parameters in w1"):
        Zoo(zoo).network(bad)
    text = _one_line(runner.invoke(app, ["info", str(zoo), "--verify"]))
    assert f"network {bad} has non-finite" in text


def test_corrupt_shard_read_during_training_is_one_line(zoo, tmp_path):
    shard = zoo / "shards" / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-16])
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"zoo": str(zoo), "model": "mlp", "epochs": 1, "gmn": {"d_out": 10}}))
    text = _one_line(runner.invoke(main_app, ["train", str(cfg), "--quiet", "--out", str(tmp_path / "run")]))
    assert text.startswith("error: ") and "shard-00000.safetensors: checksum mismatch" in text
