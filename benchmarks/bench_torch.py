"""Training-step benchmark of scalegmn.torch for one thread count (run by `bench.py`).

Usage: `python benchmarks/bench_torch.py --threads 2 --json out.json [--quick]`.
Writes a JSON list of rows (schema in `benchmarks/README.md`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
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


def machine_info() -> dict[str, Any]:
    """CPU, load and library versions of this run."""
    import torch

    return benchcommon.machine_info(torch=torch.__version__)

def matmul_rate(threads: int, seconds: float = 1.0, device: str = "cpu") -> float:
    """The device's dense float32 matmul rate (GFLOP/s): 1024x1024 products in a loop."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
    out = torch.empty(1024, 1024, device=device)
    if torch.device(device).type == "cuda":
        def product() -> None:
            torch.mm(a, b, out=out)
            torch.cuda.synchronize(device)

        return benchcommon.rate_loop(product, seconds)
    return benchcommon.rate_loop(lambda: torch.mm(a, b, out=out), seconds)

def build(name: str, seed: int = 0, batch: int = BATCH, device: str = "cpu",
          overrides: dict[str, Any] | None = None) -> tuple[Any, Any, Callable[[Any], Any]]:
    """Model, batch and loss of a configuration, on `device`.

    Args:
        name: a key of `CONFIGS`.
        seed: seeds the networks, targets and model.
        batch: networks per batch.
        device: where model, batch and targets live.
        overrides: `ScaleGMNConfig` fields to change (for a preset's model: tiny smoke sizes).
    """
    import torch
    import torch.nn.functional as F

    from scalegmn.torch import ScaleGMN, ScaleGMNConfig, collate
    from scalegmn.weightgraph import random_network

    c = CONFIGS[name]
    spec = benchcommon.bench_spec(c["net"])
    gen = torch.Generator().manual_seed(seed)
    if "preset" in c:
        cfg = benchcommon.preset_gmn(c["preset"], **(overrides or {}))
    elif c["net"] == "siren":
        cfg = ScaleGMNConfig(d_hidden=D_HIDDEN, n_layers=N_LAYERS, d_out=10, bidirectional=c["bidirectional"])
    else:
        cfg = ScaleGMNConfig(d_hidden=D_HIDDEN, n_layers=N_LAYERS, d_out=1, d_edge_in=9,
                             bidirectional=c["bidirectional"])
    if c["net"] == "siren":
        target = torch.randint(0, cfg.d_out, (batch,), generator=gen).to(device)

        def loss(y: Any) -> Any:
            return F.cross_entropy(y, target)
    else:
        target = torch.rand(batch, generator=gen).to(device)

        def loss(y: Any) -> Any:
            return F.mse_loss(torch.sigmoid(y[:, 0]), target)
    nets = [random_network(spec, rng=seed * 100_000 + k) for k in range(batch)]
    torch.manual_seed(seed)
    return ScaleGMN(cfg).to(device), collate(nets).to(device), loss


def _addmm_flop(self_shape: Any, a_shape: Any, b_shape: Any, out_shape: Any = None, **kw: Any) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def matmul_flops(model: Any, batch: Any, loss_fn: Callable[[Any], Any], fused: bool) -> int:
    """Matmul FLOPs of one forward + backward (in-place `addmm_` gradient accumulation included)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    old, model.fused = model.fused, fused
    try:
        with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_flop}) as fc:
            loss_fn(model(batch)).backward()
    finally:
        model.fused = old
        model.zero_grad(set_to_none=True)
    counts = fc.get_flop_counts().get("Global", {})
    return int(sum(v for k, v in counts.items()
                   if str(k).split(".")[-1] in ("mm", "addmm", "addmm_", "bmm", "baddbmm")))


def run_config(name: str, mode: str, threads: int, repeats: int, warmup: int,
               rate: float, *, batch: int = BATCH, device: str = "cpu",
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time training steps (forward, backward, AdamW) of one configuration and mode.

    On a CUDA device each step ends with a synchronisation (so the time is the step's, not
    its launch's) and the row gains `device` and `peak_device_mb` (`torch.cuda.max_memory_allocated`).
    """
    import torch

    from scalegmn.torch import compile_model

    torch.set_num_threads(threads)
    cuda = torch.device(device).type == "cuda"
    benchcommon.reset_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    model, graphs, loss_fn = build(name, batch=batch, device=device, overrides=overrides)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fwd = compile_model(model) if mode == "compiled" else model

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(fwd(graphs))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)

    warm_s, times = benchcommon.time_steps(step, warmup, repeats)
    peak = benchcommon.peak_mb()
    peak_device = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    model_flops = matmul_flops(model, graphs, loss_fn, fused=False)
    mm_flops = model_flops if mode == "compiled" else matmul_flops(model, graphs, loss_fn, fused=True)
    row = benchcommon.step_row(config=name, backend="torch", threads=threads, mode=mode, batch=len(graphs),
                               times=times, warm_s=warm_s, flops=mm_flops, model_flops=model_flops,
                               rate=rate, peak=peak)
    return {**row, "device": str(device), "peak_device_mb": peak_device}


def main(argv: list[str] | None = None) -> int:
    """Run every configuration and mode for one thread count and write the rows as JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="few steps, smoke run")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    p.add_argument("--modes", default="eager,compiled", help="eager and/or compiled")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per configuration")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    repeats, warmup = (2, 1) if a.quick else (7, 2)
    repeats = a.repeats or repeats
    info = machine_info()

    def run_one(name: str, mode: str) -> dict[str, Any]:
        rate = matmul_rate(a.threads, 0.5 if a.quick else 1.0)
        return run_config(name, mode, a.threads, repeats, warmup + (1 if mode == "compiled" else 0), rate)

    return benchcommon.write_rows("torch", a.threads, a.configs.split(","), a.modes.split(","), run_one,
                                  info, a.json)


if __name__ == "__main__":
    sys.exit(main())
