"""What the backend benchmark scripts share: the machine record, the matmul-rate loop, peak memory."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PRESET_CONFIGS: dict[str, dict[str, Any]] = {
    "inr-mnist-scalegmn": {"net": "siren", "preset": "inr-mnist-scalegmn"},
    "inr-mnist-scalegmn-b": {"net": "siren", "preset": "inr-mnist-scalegmn-b"},
    "genpred-cifar10gs-relu-scalegmn": {"net": "cnn-relu", "preset": "genpred-cifar10gs-relu-scalegmn"},
    "genpred-cifar10gs-relu-scalegmn-b": {"net": "cnn-relu", "preset": "genpred-cifar10gs-relu-scalegmn-b"},
}
"""Benchmark rows at the paper's model sizes: the model of each preset (`get_preset(name).gmn`)
on the networks of its data set (DWS MNIST INRs: SIREN 2-32-32-1; CIFAR-10-GS: the Small
CNN Zoo's ReLU CNNs), so that comparisons with the original implementation are at equal size."""


def bench_spec(net: str) -> Any:
    """The architecture of a benchmark's input networks: `siren` or `cnn-<activation>`."""
    from scalegmn.weightgraph import NetworkSpec

    if net == "siren":
        return NetworkSpec.siren((2, 32, 32, 1), output_offset=0.5)
    return NetworkSpec.small_cnn(activation=net.split("-")[1])


def preset_gmn(name: str, **overrides: Any) -> Any:
    """The `ScaleGMNConfig` of preset `name`, with `overrides` (e.g. tiny widths for a smoke run)."""
    from scalegmn.tasks.presets import get_preset

    gmn = get_preset(name).gmn
    return type(gmn).model_validate({**gmn.model_dump(), **overrides}) if overrides else gmn


def machine_info(**versions: str) -> dict[str, Any]:
    """CPU model, cores, load average, Python and the given library versions, allocator."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        **versions,
        "allocator": "LD_PRELOAD=" + os.environ["LD_PRELOAD"] if os.environ.get("LD_PRELOAD") else "default",
    }


def rate_loop(product: Callable[[], Any], seconds: float = 1.0, n: int = 1024) -> float:
    """GFLOP/s of `product` (one `n x n` by `n x n` matmul per call): best of 5 timed slices."""
    for _ in range(3):
        product()
    rates = []
    for _ in range(5):
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            product()
            k += 1
        rates.append(2 * n**3 * k / (time.perf_counter() - t0) / 1e9)
    return max(rates)


def reset_peak() -> bool:
    """Reset the process's peak resident set (Linux); False where it cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak resident set size of this process since the last `reset_peak`, in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, list[float]]:
    """Run `step` `warmup` times, then time `repeats` calls; `(warm-up seconds, step seconds)`."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return warm_s, times


def step_row(*, config: str, backend: str, threads: int, mode: str, batch: int, times: list[float],
             warm_s: float, flops: float, model_flops: float, rate: float, peak: float) -> dict[str, Any]:
    """One benchmark row (the schema `bench.py` prints): median step time, throughput, FLOP rates.

    `flops` are the matmul FLOPs the step executes, `model_flops` those of the model's
    definition (they differ where kernels recompute products), `rate` the machine's matmul
    GFLOP/s, `peak` the peak resident set in MB.
    """
    step_s = statistics.median(times)
    gflops = flops / step_s / 1e9
    return {
        "config": config,
        "backend": backend,
        "threads": threads,
        "mode": mode,
        "batch": batch,
        "step_ms": step_s * 1e3,
        "step_ms_min": min(times) * 1e3,
        "repeats": len(times),
        "warmup_s": warm_s,
        "networks_per_s": batch / step_s,
        "gflop_per_network": flops / batch / 1e9,
        "gflop_per_network_model": model_flops / batch / 1e9,
        "gflop_per_s": gflops,
        "matmul_gflop_per_s": rate,
        "matmul_fraction": gflops / rate,
        "peak_rss_mb": peak,
    }


def write_rows(backend: str, threads: int, configs: list[str], modes: list[str],
               run_one: Callable[[str, str], dict[str, Any]], info: dict[str, Any], path: Path) -> int:
    """Run every (configuration, mode), record failures as rows, write the rows as JSON to `path`."""
    rows = []
    for name in configs:
        for mode in modes:
            try:
                row = run_one(name, mode)
            except Exception as err:  # a failing configuration is reported, not fatal
                row = {"config": name, "backend": backend, "threads": threads, "mode": mode,
                       "error": f"{type(err).__name__}: {err}"}
            row["machine"] = {**info, "loadavg_end": list(os.getloadavg())}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "machine"}), file=sys.stderr, flush=True)
    path.write_text(json.dumps(rows, indent=2))
    return 0
