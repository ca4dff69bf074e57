"""Benchmark: INR zoo building throughput, and batch loading next to a training step.

Usage (from the repository root):

    python packages/scalegmn-tasks/benchmarks/bench_zoo.py --count 512 --workers 1,2 \
        --out bench_zoo.json

Prints a table and writes the numbers as JSON. Throughput is end to end (process start,
compilation, fitting, writing), so larger `--count` approaches the steady-state rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def bench_build(count: int, steps: int, workers: int, compile: bool, batch_size: int) -> dict:
    from scalegmn.tasks.zoo import Zoo, build_inr_zoo

    with tempfile.TemporaryDirectory() as tmp:
        load0 = _load()
        t0 = time.perf_counter()
        _, stats = build_inr_zoo(Path(tmp) / "z", "mnist5k", count=count, steps=steps,
                                 workers=workers, compile=compile, batch_size=batch_size,
                                 shard_size=max(16, count // (4 * workers)), progress=False)
        seconds = time.perf_counter() - t0
        psnr = Zoo(Path(tmp) / "z").columns["psnr"]
    return {
        "case": f"build {count} INRs, {steps} steps", "workers": workers, "compile": compile,
        "batch_size": batch_size, "seconds": round(seconds, 2),
        "inrs_per_s": round(count / seconds, 2),
        "steady_inrs_per_s": round(stats.steady_networks_per_second, 2),
        "startup_s": round(stats.first_result_seconds or 0.0, 1), "psnr_median_db": round(float(np.median(psnr)), 1),
        "load_before": load0, "load_after": _load(),
    }


def _time(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def _tiny_worker(root, task, options, report):
    from scalegmn.tasks.zoo import write_shard
    from scalegmn.weightgraph import NetworkSpec

    spec = NetworkSpec.mlp([2, 3, 1], activation="tanh")
    rng = np.random.default_rng(task.index)
    n = task.count
    ws = [rng.normal(size=(n, 3, 2)).astype(np.float32), rng.normal(size=(n, 1, 3)).astype(np.float32)]
    bs = [np.zeros((n, 3), np.float32), np.zeros((n, 1), np.float32)]
    ids = np.arange(task.start, task.start + n)
    cols = {"id": ids, "target": ids % 10, "split": (ids % 10 == 0).astype(np.int8), "group": ids}
    return write_shard(root, task.index, 0, spec, task.start, ws, bs, cols)


def bench_open(n: int = 100_000, shard: int = 1000) -> dict:
    """Opening a zoo of `n` tiny networks (manifest + columns; no shard is read)."""
    from scalegmn.tasks.zoo import Manifest, ShardTask, Zoo, run_build
    from scalegmn.weightgraph import NetworkSpec

    spec = NetworkSpec.mlp([2, 3, 1], activation="tanh")
    tasks = [ShardTask(index=k, spec_index=0, start=s, count=min(shard, n - s))
             for k, s in enumerate(range(0, n, shard))]
    m = Manifest(specs=[spec], n_networks=n, n_shards=len(tasks))
    with tempfile.TemporaryDirectory() as tmp:
        run_build(Path(tmp) / "z", m, tasks, _tiny_worker, {}, progress=False)
        t0 = time.perf_counter()
        zoo = Zoo(Path(tmp) / "z")
        opened = time.perf_counter() - t0
        shards_read = zoo.n_open_shards
        t0 = time.perf_counter()
        zoo.network(n // 2)
        first = time.perf_counter() - t0
    return {"case": f"open a zoo of {n:,} networks in {len(tasks)} shards", "ms": round(1e3 * opened, 3),
            "first_network_ms": round(1e3 * first, 3), "shards_read_at_open": shards_read}


def bench_loading(batch_size: int, repeat: int) -> list[dict]:
    """Batch fetch and collate from a zoo, and (if the backend exists) one training step."""
    import torch

    from scalegmn.tasks.datasets import open_zoo
    from scalegmn.tasks.sources import digits
    from scalegmn.tasks.zoo import build_inr_zoo

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build_inr_zoo(Path(tmp) / "z", digits(), count=1024, steps=1, shard_size=256, progress=False)
        ds = open_zoo(Path(tmp) / "z", "all")
        rng = np.random.default_rng(0)
        idx = lambda: rng.choice(len(ds), batch_size, replace=False)  # noqa: E731
        cold = open_zoo(Path(tmp) / "z", "all", cache=False)
        rows.append({"case": f"fetch {batch_size} networks (from shards read on first use, no cache)",
                     "ms": round(1e3 * _time(lambda: cold.batch(idx()), repeat), 3)})
        ds.networks(range(len(ds)))
        rows.append({"case": f"fetch {batch_size} networks (cached)",
                     "ms": round(1e3 * _time(lambda: ds.batch(idx()), repeat), 3)})
        ds.dense_batch([0])
        rows.append({"case": f"dense graph batch of {batch_size} (cached encoding)",
                     "ms": round(1e3 * _time(lambda: ds.dense_batch(idx()), repeat), 3)})
        try:
            from scalegmn.torch import ScaleGMN, collate
            from scalegmn.weightgraph import ScaleGMNConfig
        except ImportError:
            rows.append({"case": "scalegmn.torch not available: no training step measured", "ms": None})
            return rows
        rows.append({"case": f"scalegmn.torch.collate of {batch_size}",
                     "ms": round(1e3 * _time(lambda: collate(ds.batch(idx())[0]), repeat), 3)})
        model = ScaleGMN(ScaleGMNConfig(d_hidden=64, n_layers=4, d_out=10))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batch = collate(ds.batch(idx())[0])
        y = torch.zeros(batch_size, dtype=torch.long)

        def step() -> None:
            loss = torch.nn.functional.cross_entropy(model(batch), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        rows.append({"case": f"ScaleGMN training step, batch {batch_size} (hidden 64, 4 layers)",
                     "ms": round(1e3 * _time(step, max(3, repeat // 10)), 3)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=512)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--workers", default="2", help="comma separated, e.g. 1,2")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--out", default="bench_zoo.json")
    a = p.parse_args()

    from rich.console import Console
    from rich.table import Table

    builds = [] if a.skip_build else [
        bench_build(a.count, a.steps, int(w), not a.no_compile, a.batch_size) for w in a.workers.split(",")
    ]
    opening = bench_open()
    loading = [opening, *bench_loading(64, 50)]
    console = Console(width=160)
    if builds:
        t = Table(title="INR zoo building (MNIST-5k, SIREN 2-32-32-1)")
        for col in builds[0]:
            t.add_column(col)
        for r in builds:
            t.add_row(*(str(v) for v in r.values()))
        console.print(t)
    t = Table(title="batch loading vs a training step")
    t.add_column("case")
    t.add_column("ms", justify="right")
    for r in loading:
        t.add_row(r["case"], "" if r["ms"] is None else f"{r['ms']:.3f}")
    console.print(t)
    console.print(f"first network of the opened zoo: {opening['first_network_ms']} ms "
                  f"(one shard read and checksummed); shards read at open: {opening['shards_read_at_open']}")
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "build": builds, "loading": loading}
    Path(a.out).write_text(json.dumps(result, indent=1))
    console.print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
