"""`scalegmn zoo build` under torchrun: two CPU processes build the single-process zoo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from scalegmn.tasks.zoo import Zoo
from scalegmn.tasks.zoo.cli import app

runner = CliRunner()
TIMING = ("seconds", "load_average_1min", "processes", "ranks")


def _images(tmp_path):
    from scalegmn.tasks.sources import digits

    d = digits()
    path = tmp_path / "imgs.npz"
    np.savez(path, images=d.images[:30], labels=d.labels[:30])
    return str(path)


def _torchrun(args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "1000"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "scalegmn.tasks.cli", "zoo", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _same_zoo(a, b, history=True):
    """Byte-identical shards and columns, and the same manifest (build history without its
    timing and process fields)."""
    files = sorted(p.name for p in (a / "shards").iterdir())
    assert files == sorted(p.name for p in (b / "shards").iterdir())
    for name in files:
        assert (a / "shards" / name).read_bytes() == (b / "shards" / name).read_bytes(), name
    assert (a / "columns.safetensors").read_bytes() == (b / "columns.safetensors").read_bytes()
    ma, mb = _manifest(a), _manifest(b)
    ha, hb = ma.pop("history"), mb.pop("history")
    ma["shards"].sort(key=lambda s: s["index"])
    mb["shards"].sort(key=lambda s: s["index"])
    assert ma == mb
    strip = lambda h: {k: v for k, v in h.items() if k not in TIMING}  # noqa: E731
    if history:
        assert [strip(h) for h in ha] == [strip(h) for h in hb]


def test_torchrun_build_equals_single_process_build_and_resumes(tmp_path):
    src = _images(tmp_path)
    opts = ["--source", src, "--count", "24", "--steps", "10", "--batch-size", "4", "--shard-size", "4",
            "--workers", "1", "--no-compile", "--quiet"]
    r = runner.invoke(app, ["build", "inr", str(tmp_path / "one"), *opts])
    assert r.exit_code == 0, r.output

    proc = _torchrun(["build", "inr", str(tmp_path / "two"), *opts])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("built 24 INRs") == 1  # rank 0 reports for both
    _same_zoo(tmp_path / "one", tmp_path / "two")
    entry = _manifest(tmp_path / "two")["history"][-1]
    assert entry["processes"] == 2 and entry["shards_built"] == 6
    # The pending shards are dealt out in turn: disjoint, and together all of them.
    assert [r["shards"] for r in entry["ranks"]] == [[0, 2, 4], [1, 3, 5]]

    # An error while preparing (the folder already holds a zoo) stops both processes.
    proc = _torchrun(["build", "inr", str(tmp_path / "two"), *opts], timeout=90)
    assert proc.returncode != 0
    assert (proc.stdout + proc.stderr).count("already holds a zoo") == 2, proc.stdout + proc.stderr[-2000:]

    # A killed build: rank 1's shards were written but never reached the manifest. Resuming
    # (here in one process) recomputes exactly those, and gives the same zoo.
    m = _manifest(tmp_path / "two")
    m.update(shards=[s for s in m["shards"] if s["index"] % 2 == 0], complete=False, columns_file=None,
             columns_sha256=None, split_counts={})
    (tmp_path / "two" / "manifest.json").write_text(json.dumps(m))
    (tmp_path / "two" / "columns.safetensors").unlink()
    r = runner.invoke(app, ["build", "inr", str(tmp_path / "two"), *opts, "--resume"])
    assert r.exit_code == 0, r.output
    assert "3 shards from an earlier run" in " ".join(r.output.split())
    assert len(Zoo(tmp_path / "two", verify="open")) == 24
    _same_zoo(tmp_path / "one", tmp_path / "two", history=False)  # two runs, one history entry each



def test_torchrun_worker_error_stops_both_processes_and_keeps_finished_shards(tmp_path):
    opts = ["--source", _images(tmp_path), "--count", "24", "--steps", "5", "--batch-size", "4",
            "--shard-size", "4", "--workers", "1", "--no-compile", "--quiet"]
    z = tmp_path / "z"
    assert runner.invoke(app, ["build", "inr", str(z), *opts]).exit_code == 0
    # An interrupted build with shards 0 and 4 recorded; pending 1, 2, 3, 5 are dealt out as
    # rank 0: 1, 3 and rank 1: 2, 5, and shard 5 cannot be written (a folder has its name).
    m = _manifest(z)
    m.update(shards=[s for s in m["shards"] if s["index"] in (0, 4)], complete=False)
    (z / "manifest.json").write_text(json.dumps(m))
    for k in (1, 2, 3, 5):
        (z / "shards" / f"shard-{k:05d}.safetensors").unlink()
    (z / "shards" / "shard-00005.safetensors").mkdir()

    proc = _torchrun(["build", "inr", str(z), *opts, "--resume"], timeout=90)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "zoo build failed in process 1" in out and out.count("IsADirectoryError") >= 2, out[-3000:]
    m = _manifest(z)
    done = {s["index"] for s in m["shards"]}
    assert not m["complete"] and {0, 1, 2, 4} <= done and 5 not in done, done
    for s in m["shards"]:
        assert (z / s["file"]).is_file()
