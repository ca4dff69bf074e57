"""Training-step benchmark of scalegmn.jax for one thread count (run by `bench.py`).

Usage: `python benchmarks/bench_jax.py --threads 2 --json out.json [--quick]`.
Writes a JSON list of rows with the schema of `bench_torch.py` (same configurations: today's rows at
batch 64, hidden 128, 4 layers, and the presets' models; the step is forward, backward, clipping, AdamW).

JAX has one mode, `jit` (the whole step is one XLA program; op-by-op execution is not a
way anyone trains), so the torch mode names `eager` and `compiled` both select it. The
thread count is applied before jax is imported: the process is pinned to `T` cores (XLA
sizes its thread pool from them) and, for one thread, Eigen's multi-threading is switched
off with `XLA_FLAGS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import benchcommon

CONFIGS: dict[str, dict[str, Any]] = {
    "mnist-inr-fwd": {"net": "siren", "bidirectional": False},
    "mnist-inr-bidir": {"net": "siren", "bidirectional": True},
    "cnn-relu-fwd": {"net": "cnn-relu", "bidirectional": False},
    "cnn-relu-bidir": {"net": "cnn-relu", "bidirectional": True},
    "cnn-tanh-fwd": {"net": "cnn-tanh", "bidirectional": False},
    "cnn-tanh-bidir": {"net": "cnn-tanh", "bidirectional": True},
    **benchcommon.PRESET_CONFIGS,
}
BATCH = 64
D_HIDDEN = 128
N_LAYERS = 4
MODES = {"jit": "jit", "eager": "jit", "compiled": "jit"}


def limit_threads(threads: int) -> dict[str, Any]:
    """Restrict XLA's CPU threads to `threads` (call before importing jax)."""
    info: dict[str, Any] = {}
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if threads < len(cpus):
            os.sched_setaffinity(0, set(cpus[:threads]))
        info["affinity"] = sorted(os.sched_getaffinity(0))
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return info


def machine_info() -> dict[str, Any]:
    """CPU, load and library versions of this run."""
    import equinox
    import jax
    import optax

    return benchcommon.machine_info(jax=jax.__version__, equinox=equinox.__version__, optax=optax.__version__)

def matmul_rate(seconds: float = 1.0) -> float:
    """The machine's dense float32 matmul rate (GFLOP/s): 1024x1024 products in a loop."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (1024, 1024), jnp.float32)
    b = jax.random.normal(kb, (1024, 1024), jnp.float32)
    mm = jax.jit(jnp.matmul)
    return benchcommon.rate_loop(lambda: mm(a, b).block_until_ready(), seconds)

def build(name: str, seed: int = 0, batch: int = BATCH,
          overrides: dict[str, Any] | None = None) -> tuple[Any, Any, Any, Any, Any]:
    """Config, model, batch, labels and per-example loss of a configuration (float32).

    Args:
        name: a key of `CONFIGS`.
        seed: seeds the networks, labels and model.
        batch: networks per batch.
        overrides: `ScaleGMNConfig` fields to change (for a preset's model: tiny smoke sizes).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scalegmn.jax import ScaleGMN, ScaleGMNConfig, collate
    from scalegmn.weightgraph import random_network

    c = CONFIGS[name]
    rng = np.random.default_rng(seed)
    spec = benchcommon.bench_spec(c["net"])
    if "preset" in c:
        cfg = benchcommon.preset_gmn(c["preset"], **(overrides or {}))
    elif c["net"] == "siren":
        cfg = ScaleGMNConfig(d_hidden=D_HIDDEN, n_layers=N_LAYERS, d_out=10, bidirectional=c["bidirectional"])
    else:
        cfg = ScaleGMNConfig(d_hidden=D_HIDDEN, n_layers=N_LAYERS, d_out=1, d_edge_in=9,
                             bidirectional=c["bidirectional"])
    if c["net"] == "siren":
        labels = jnp.asarray(rng.integers(0, cfg.d_out, batch))
        loss: Any = "cross_entropy"
    else:
        labels = jnp.asarray(rng.random(batch), jnp.float32)

        def loss(y: Any, t: Any) -> Any:
            return (jax.nn.sigmoid(y[:, 0]) - t) ** 2
    nets = [random_network(spec, rng=seed * 100_000 + k) for k in range(batch)]
    model = ScaleGMN(cfg, key=jax.random.key(seed), dtype=jnp.float32)
    return cfg, model, collate(nets, dtype=jnp.float32), labels, loss


def matmul_flops(fn: Any, *args: Any) -> int:
    """FLOPs of the matrix products (`dot_general`) in the traced computation of `fn(*args)`."""
    import jax
    from jax.extend import core

    def walk(jaxpr: Any) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                (lc, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                k = 1
                for d in lc:
                    k *= lhs[d]
                n_out = 1
                for d in eqn.outvars[0].aval.shape:
                    n_out *= d
                total += 2 * n_out * k
            # A loop body runs `length` times (the dense path's chunks are a `scan`).
            times = int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else 1
            for p in eqn.params.values():
                for sub in p if isinstance(p, tuple | list) else (p,):
                    if isinstance(sub, core.ClosedJaxpr):
                        total += times * walk(sub.jaxpr)
                    elif isinstance(sub, core.Jaxpr):
                        total += times * walk(sub)
        return total

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def device_peak_mb() -> float | None:
    """Peak memory in use on JAX's first device so far (MB), where the device reports it (GPUs)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def run_config(name: str, threads: int, repeats: int, warmup: int, rate: float, *, batch: int = BATCH,
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time jit-compiled training steps (forward, backward, AdamW) of one configuration.

    Runs on JAX's default device; the row's `device` names it and `peak_device_mb` is the
    device's peak memory in use so far in this process (None where the device does not
    report it, as on the CPU).
    """
    import equinox as eqx
    import jax

    from scalegmn.jax import forward, init_optimizer, make_optimizer, make_train_step
    from scalegmn.jax.train import LOSSES

    benchcommon.reset_peak()
    cfg, model, batch_, labels, loss = build(name, batch=batch, overrides=overrides)
    opt = make_optimizer(lr=1e-4, weight_decay=0.01, warmup_steps=0, clip_norm=10.0)
    state = init_optimizer(opt, model)
    step = make_train_step(cfg, opt, loss=loss)
    key = jax.random.key(1)

    def run() -> None:
        nonlocal model, state
        model, state, value = step(model, state, batch_, labels, key)
        jax.block_until_ready(value)

    warm_s, times = benchcommon.time_steps(run, warmup, repeats)
    peak = benchcommon.peak_mb()
    loss_fn = LOSSES[loss] if isinstance(loss, str) else loss

    def objective(params: Any) -> Any:
        out = forward(params, cfg, batch_, key)
        assert not isinstance(out, tuple)
        return loss_fn(out, labels).mean()

    flops = matmul_flops(eqx.filter_value_and_grad(objective), model.params)
    row = benchcommon.step_row(config=name, backend="jax", threads=threads, mode="jit", batch=batch,
                               times=times, warm_s=warm_s, flops=flops, model_flops=flops, rate=rate,
                               peak=peak)
    return {**row, "device": str(jax.devices()[0]), "peak_device_mb": device_peak_mb()}


def main(argv: list[str] | None = None) -> int:
    """Run every configuration for one thread count and write the rows as JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="few steps, smoke run")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    p.add_argument("--modes", default="jit", help="jit (eager and compiled are accepted as jit)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per configuration")
    a = p.parse_args(argv)
    limits = limit_threads(a.threads)
    unknown = [m for m in a.modes.split(",") if m not in MODES]
    if unknown:
        p.error(f"unknown mode(s) {unknown}; JAX has {sorted(MODES)}")
    modes = sorted({MODES[m] for m in a.modes.split(",")})
    repeats, warmup = (2, 1) if a.quick else (7, 2)
    repeats = a.repeats or repeats
    info = {**machine_info(), **limits}

    def run_one(name: str, mode: str) -> dict[str, Any]:
        return run_config(name, a.threads, repeats, warmup, matmul_rate(0.5 if a.quick else 1.0))

    return benchcommon.write_rows("jax", a.threads, a.configs.split(","), modes, run_one, info, a.json)


if __name__ == "__main__":
    sys.exit(main())
