"""What the backend benchmark scripts share: the machine record, the matmul-rate loop, peak memory."""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
