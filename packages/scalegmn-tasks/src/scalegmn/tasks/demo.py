"""The demo: build a small MNIST INR zoo, train ScaleGMN-B and two baselines, compare on test."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from scalegmn.weightgraph import ScaleGMNConfig
from scalegmn.weightgraph.io import atomic_write

from .train import RunConfig, train_run

PRESETS: dict[str, dict[str, Any]] = {
    # INRs, fitting steps (None: the DWS recipe's 1,000 with its 40 dB early stop), training
    # epochs of the two graph metanetworks (the MLP gets `mlp_epochs`), and the loop settings
    "quick": {"count": 300, "steps": 100, "epochs": 2, "mlp_epochs": 8, "lr": 1e-3, "warmup_steps": 100,
              "batch_size": 32, "lr_schedule": "cosine"},
    "full": {"count": 5000, "steps": None, "epochs": 12, "mlp_epochs": 48, "lr": 3e-3, "warmup_steps": 250,
             "batch_size": 32, "lr_schedule": "cosine"},
}


def run_demo(out: str | Path = "scalegmn-demo", quick: bool = False, workers: int = 2,
             progress: bool = True, threads: int | None = None, jobs: int = 2) -> dict[str, dict[str, Any]]:
    """Build (or reuse) the DWS-recipe zoo under `out/zoo-dws`, train the three models, write a table and a plot.

    Args:
        out: folder for the zoo, the metrics log, the table and the plot.
        quick: a tiny zoo and two epochs (a smoke run, well under two minutes).
        workers: processes for building the zoo.
        progress: show progress bars.
        threads: torch threads per training run (None: one when `jobs` is 2, else torch's
            default).
        jobs: 2 trains ScaleGMN-B in this process while a second process trains the GMN and
            then the MLP (on two cores this is about a quarter faster than one run after the
            other on two threads each, since these small models use a second thread poorly);
            1 trains them one after the other. The results do not depend on it at a fixed
            `threads`.

    Returns:
        Per model: test accuracy at the best validation epoch, validation accuracy, seconds.
    """
    from rich.console import Console
    from rich.table import Table

    from .zoo import build_inr_zoo
    from .zoo.store import Zoo, ZooError

    if jobs not in (1, 2):
        raise ValueError(f"jobs={jobs}: use 1 (one run after the other) or 2 (two runs side by side)")
    if threads is None and jobs == 2:
        threads = 1  # two one-thread runs on two cores
    console = Console()
    preset = PRESETS["quick" if quick else "full"]
    out = Path(out)
    zoo_dir = out / ("zoo-dws-quick" if quick else "zoo-dws")  # not a zoo of an earlier recipe
    t0 = time.perf_counter()
    try:
        Zoo(zoo_dir)
        console.print(f"reusing the zoo in {zoo_dir}")
    except (ZooError, FileNotFoundError, ValueError):
        steps = preset["steps"] or 1000
        console.print(f"building {preset['count']} MNIST INRs (DWS recipe, at most {steps} steps each) in {zoo_dir}")
        build_inr_zoo(zoo_dir, "mnist5k", workers=workers, count=preset["count"], recipe="dws",
                      steps=preset["steps"], seed=0, progress=progress, resume=zoo_dir.exists(),
                      compile=not quick)
    t_zoo = time.perf_counter() - t0
    # Layer norm inside the MLPs keeps the symmetry and bounds the invariant factors, so the
    # multiplicative blocks do not raise feature scales layer after layer. Four narrow layers
    # learn faster per epoch than two or three wider ones of about the same size (Results).
    gmn = ScaleGMNConfig(d_hidden=24, n_layers=4, d_out=10, layer_norm=True)
    loop = {k: preset[k] for k in ("lr", "warmup_steps", "batch_size", "lr_schedule")}
    runs = {
        "ScaleGMN-B": RunConfig(zoo=str(zoo_dir), model="scalegmn",
                                gmn=gmn.model_copy(update={"bidirectional": True}), epochs=preset["epochs"],
                                threads=threads, **loop),
        "GMN (permutation only)": RunConfig(zoo=str(zoo_dir), model="gmn", gmn=gmn, epochs=preset["epochs"],
                                            threads=threads, **loop),
        "MLP on weights": RunConfig(zoo=str(zoo_dir), model="mlp", gmn=gmn, epochs=preset["mlp_epochs"],
                                    threads=threads, **loop),
    }
    results: dict[str, dict[str, Any]] = {}
    out.mkdir(parents=True, exist_ok=True)
    log = out / "metrics.jsonl"
    if jobs == 2:
        from .zoo.build import _worker_pool

        first, *rest = runs
        # the worker is terminated if this process stops (an error, Ctrl-C, SIGTERM)
        with _worker_pool(1, None, mp.get_context("spawn")) as pool:
            side = pool.submit(_train_quietly, {n: runs[n].model_dump_json() for n in rest}, str(log))
            console.print(f"training {first}; in a second process: {', then '.join(rest)}")
            results[first] = train_run(runs[first], log_path=log, progress=progress)
            if not side.done():
                console.print(f"waiting for {' and '.join(rest)}")
            results.update(side.result())
    else:
        for name, cfg in runs.items():
            console.print(f"training {name}")
            results[name] = train_run(cfg, log_path=log, progress=progress)
    table = Table(title=f"INR classification, MNIST ({preset['count']} INRs; zoo {t_zoo:.0f} s)")
    for col in ("model", "test acc (best val)", "val acc", "epochs", "train s"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, f"{r['test_acc']:.3f}", f"{r['val_acc']:.3f}", str(len(r["history"])), f"{r['seconds']:.0f}")
    console.print(table)
    _plot(results, out / "demo.png")
    atomic_write(out / "results.json", json.dumps(results, indent=2))
    console.print(f"plot: {out / 'demo.png'}; results: {out / 'results.json'}; total {time.perf_counter() - t0:.0f} s")
    return results


def _train_quietly(configs: dict[str, str], log: str) -> dict[str, dict[str, Any]]:
    """Train runs one after the other without progress bars (the demo's second process)."""
    return {name: train_run(RunConfig.model_validate_json(c), log_path=log, progress=False)
            for name, c in configs.items()}


def _plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot([h["seconds"] for h in r["history"]], [h["val_acc"] for h in r["history"]], marker="o", label=name)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("MNIST INR classification")
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120), to_path=True)
    finally:
        plt.close(fig)
