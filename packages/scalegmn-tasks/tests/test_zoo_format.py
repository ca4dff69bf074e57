"""The zoo format: atomic shards, checksums, lazy opening, resumable builds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from scalegmn.tasks.datasets import open_zoo
from scalegmn.tasks.zoo import Manifest, ShardTask, Zoo, ZooError, run_build, write_shard
from scalegmn.tasks.zoo.store import read_manifest, read_safetensors
from scalegmn.weightgraph import NetworkSpec, forward, random_network

TINY = NetworkSpec.mlp([2, 3, 1], activation="tanh")


def _tiny_worker(root, task, options, report):
    """Deterministic random networks: network i from default_rng([seed, i])."""
    n = task.count
    nets = [random_network(TINY, np.random.default_rng([options["seed"], task.start + k]), np.float32)
            for k in range(n)]
    ws = [np.stack([net.weights[i] for net in nets]) for i in range(TINY.n_layers)]
    bs = [np.stack([net.biases[i] for net in nets]) for i in range(TINY.n_layers)]
    ids = np.arange(task.start, task.start + n)
    if options.get("fail_at") == task.index:
        raise RuntimeError("simulated crash")
    cols = {"id": ids, "target": ids % 3, "split": (ids % 10 >= 8).astype(np.int8) * 2,
            "group": ids, "score": ids.astype(np.float32) / 7}
    report(n)
    return write_shard(root, task.index, 0, TINY, task.start, ws, bs, cols)


def _plan(n: int, shard: int, seed: int = 0) -> tuple[Manifest, list[ShardTask]]:
    tasks = [ShardTask(index=k, spec_index=0, start=s, count=min(shard, n - s))
             for k, s in enumerate(range(0, n, shard))]
    m = Manifest(kind="custom", specs=[TINY], n_networks=n, n_shards=len(tasks), seed=seed,
                 build={"n": n, "shard": shard}, columns=["id", "target", "split", "group", "score"])
    return m, tasks


def _build(root, n=50, shard=8, **kw):
    m, tasks = _plan(n, shard)
    return run_build(root, m, tasks, _tiny_worker, {"seed": 0, **kw.pop("options", {})},
                     progress=False, **kw)


def test_round_trip_and_forward(tmp_path):
    manifest, stats = _build(tmp_path / "z")
    assert manifest.complete and stats.networks_built == 50 and stats.shards_built == 7
    zoo = Zoo(tmp_path / "z")
    assert len(zoo) == 50
    np.testing.assert_array_equal(zoo.columns["id"], np.arange(50))
    x = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    for i in (0, 7, 8, 49):
        want = random_network(TINY, np.random.default_rng([0, i]), np.float32)
        got = zoo.network(i)
        assert got.equals(want)
        np.testing.assert_array_equal(forward(got, x), forward(want, x))
    assert manifest.split_counts == {"train": 40, "val": 0, "test": 10}


def test_reader_matches_safetensors(tmp_path):
    _build(tmp_path / "z", n=10, shard=10)
    path = tmp_path / "z" / "shards" / "shard-00000.safetensors"
    (ours, meta), ref = read_safetensors(path), load_file(path)
    assert meta["start"] == 0 and meta["count"] == 10 and NetworkSpec.model_validate(meta["spec"]) == TINY
    assert set(ours) == set(ref)
    for k in ref:
        assert ours[k].dtype == ref[k].dtype
        np.testing.assert_array_equal(ours[k], ref[k])


def test_open_100k_networks_touches_no_shard(tmp_path):
    root = tmp_path / "big"
    manifest, _ = _build(root, n=100_000, shard=5_000)
    assert len(manifest.shards) == 20
    # Remove every shard: opening, counting, splitting and histograms must still work.
    shutil.rmtree(root / "shards")
    zoo = Zoo(root)
    assert len(zoo) == 100_000 and zoo.n_open_shards == 0
    assert len(zoo.split_ids("test")) == 20_000
    _, counts = zoo.target_histogram()
    assert counts.tolist() == [33_334, 33_333, 33_333]
    ds = open_zoo(root, "train")
    assert len(ds) == 80_000 and ds.zoo.n_open_shards == 0
    with pytest.raises(ZooError, match=r"shard-00003\.safetensors.*missing"):
        zoo.network(15_001)


def test_corrupt_shard_is_refused_on_access(tmp_path):
    root = tmp_path / "z"
    _build(root)
    path = root / "shards" / "shard-00002.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    zoo = Zoo(root)
    zoo.network(0)  # another shard is fine
    with pytest.raises(ZooError, match=r"shard-00002.*checksum mismatch.*networks 16\.\.23"):
        zoo.network(17)
    with pytest.raises(ZooError, match="checksum"):
        Zoo(root, verify="open")
    # Negative control: without verification the corrupt bytes would be read silently.
    Zoo(root, verify="none").network(17)


def test_truncated_shard_and_bad_manifest(tmp_path):
    root = tmp_path / "z"
    _build(root)
    path = root / "shards" / "shard-00001.safetensors"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ZooError, match=r"shard-00001.*(truncated|checksum)"):
        Zoo(root, verify="none").network(9)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(ZooError, match="invalid manifest"):
        Zoo(root)
    with pytest.raises(ZooError, match="is not a zoo"):
        Zoo(tmp_path / "nothing")


def test_interrupted_build_resumes_to_the_same_zoo(tmp_path):
    full, _ = _build(tmp_path / "full")

    def crash(rec):
        if rec.index == 3:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        _build(part, on_shard=crash)
    m = read_manifest(part)
    assert not m.complete and m.completed() == {0, 1, 2, 3}
    with pytest.raises(ZooError, match="incomplete"):
        Zoo(part)
    # A half-written temporary file, as a kill during a write leaves, is ignored and removed.
    (part / "shards" / ".shard-00004.safetensors.abc.tmp").write_bytes(b"partial")
    with pytest.raises(ZooError, match="already holds a zoo"):
        _build(part)
    m2, stats = _build(part, resume=True)
    assert stats.shards_skipped == 4 and stats.shards_built == 3
    assert not list((part / "shards").glob(".*.tmp"))
    a, b = Zoo(tmp_path / "full"), Zoo(part)
    for i in range(50):
        assert a.network(i).equals(b.network(i))
    for k in a.columns:
        np.testing.assert_array_equal(a.columns[k], b.columns[k])
    assert sorted(s.sha256 for s in m2.shards) == sorted(s.sha256 for s in full.shards)


def test_worker_error_keeps_finished_shards(tmp_path):
    root = tmp_path / "z"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _build(root, options={"fail_at": 2})
    assert read_manifest(root).completed() == {0, 1}
    _, stats = _build(root, resume=True)
    assert stats.shards_built == 5


def test_resume_with_other_options_is_refused(tmp_path):
    root = tmp_path / "z"
    with pytest.raises(KeyboardInterrupt):
        _build(root, on_shard=lambda r: (_ for _ in ()).throw(KeyboardInterrupt()))
    m, tasks = _plan(60, 8)
    with pytest.raises(ZooError, match=r"different options.*n_networks"):
        run_build(root, m, tasks, _tiny_worker, {"seed": 0}, resume=True, progress=False)


def test_recorded_shard_that_went_bad_is_rebuilt(tmp_path):
    root = tmp_path / "z"
    with pytest.raises(KeyboardInterrupt):
        _build(root, on_shard=lambda r: None if r.index < 2 else (_ for _ in ()).throw(KeyboardInterrupt()))
    (root / "shards" / "shard-00001.safetensors").write_bytes(b"garbage")
    _, stats = _build(root, resume=True)
    assert stats.shards_skipped == 2 and stats.shards_built == 5  # shard 1 again
    Zoo(root, verify="open")


def test_manifest_is_json_with_schema(tmp_path):
    _build(tmp_path / "z")
    raw = json.loads((tmp_path / "z" / "manifest.json").read_text())
    assert raw["format"] == "scalegmn-zoo" and raw["complete"] is True
    assert NetworkSpec.model_validate(raw["specs"][0]) == TINY
    assert "properties" in Manifest.model_json_schema()


def test_non_finite_parameters_are_refused_at_write(tmp_path):
    ws = [np.full((2, 3, 2), np.nan, np.float32), np.zeros((2, 1, 3), np.float32)]
    bs = [np.zeros((2, 3), np.float32), np.zeros((2, 1), np.float32)]
    cols = {"id": np.arange(2), "target": np.zeros(2), "split": np.zeros(2, np.int8), "group": np.arange(2)}
    with pytest.raises(ZooError, match=r"w0 of networks \[10, 11\] is not finite"):
        write_shard(tmp_path, 0, 0, TINY, 10, ws, bs, cols)
    assert not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_zoo_build_options_refuse_non_finite_numbers(bad):
    from pydantic import ValidationError

    from scalegmn.tasks.zoo.cnn import CNNZooOptions
    from scalegmn.tasks.zoo.inr import INRZooOptions

    INRZooOptions(output_offset=0.25)  # control
    with pytest.raises(ValidationError, match="output_offset"):
        INRZooOptions(output_offset=bad)
    with pytest.raises(ValidationError, match="lr_range"):
        CNNZooOptions(lr_range=(1e-3, bad))
