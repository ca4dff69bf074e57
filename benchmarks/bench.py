"""Training-step benchmark of every available backend: a table and a JSON file.

Each (backend, thread count) runs in its own process: `benchmarks/bench_<backend>.py
--threads T --json FILE [--quick] [--configs ...] [--modes ...]`, which writes a list of
rows (schema in `benchmarks/README.md`). A backend is included when its script exists and
its library imports.

Usage: `python benchmarks/bench.py [--threads 1,2] [--out bench-results/bench.json] [--quick]`
(or `nox -s bench -- --quick`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BACKENDS = {"torch": "torch", "jax": "jax"}


def available_backends() -> list[str]:
    """Backends whose script exists and whose library can be imported."""
    return [b for b, lib in BACKENDS.items()
            if (HERE / f"bench_{b}.py").is_file() and importlib.util.find_spec(lib) is not None]


def run_backend(backend: str, threads: int, extra: list[str], timeout: float) -> list[dict[str, Any]]:
    """Run one backend's script for one thread count in a fresh process; return its rows."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(HERE / f"bench_{backend}.py"), "--threads", str(threads),
               "--json", str(out), *extra]
        print(f"$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, env=env, timeout=timeout, check=False)
        if proc.returncode != 0 or not out.is_file():
            return [{"backend": backend, "threads": threads,
                     "error": f"benchmark process exited with code {proc.returncode}"}]
        return json.loads(out.read_text())


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


COLUMNS = [
    ("config", "config", "s"), ("backend", "backend", "s"), ("threads", "thr", "d"), ("mode", "mode", "s"),
    ("step_ms", "step ms", ".0f"), ("networks_per_s", "networks/s", ".1f"),
    ("gflop_per_network", "GFLOP/network", ".2f"), ("gflop_per_s", "GFLOP/s", ".0f"),
    ("matmul_fraction", "of matmul rate", ".0%"), ("peak_rss_mb", "peak MB", ".0f"),
]


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The rows as strings, one list per row, in `COLUMNS` order."""
    out = []
    for r in rows:
        if "error" in r:
            out.append([str(r.get("config", "-")), r["backend"], str(r["threads"]), str(r.get("mode", "-")),
                        "error: " + r["error"][:60], *["-"] * (len(COLUMNS) - 5)])
            continue
        out.append([_fmt(r.get(k), f) for k, _, f in COLUMNS])
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    head = "| " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    return "\n".join([head, sep] + ["| " + " | ".join(r) + " |" for r in table_rows(rows)])


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print the rows as a rich table (plain text if rich is missing)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(markdown(rows))
        return
    t = Table(title="scalegmn training step (forward, backward, AdamW), batch 64")
    for _, h, f in COLUMNS:
        t.add_column(h, justify="left" if f == "s" else "right")
    for r in table_rows(rows):
        t.add_row(*r)
    Console(width=160).print(t)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the JSON file."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--out", type=Path, default=Path("bench-results/bench.json"))
    p.add_argument("--quick", action="store_true", help="smoke run: few steps, eager only")
    p.add_argument("--backends", default=None, help="comma-separated subset of the available ones")
    p.add_argument("--configs", default=None, help="comma-separated configurations")
    p.add_argument("--modes", default=None, help="eager,compiled (default both; eager with --quick)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds per backend process")
    a = p.parse_args(argv)
    backends = available_backends()
    if a.backends:
        backends = [b for b in a.backends.split(",") if b in backends]
    if not backends:
        print("no backend available (need benchmarks/bench_<backend>.py and its library)", file=sys.stderr)
        return 1
    extra = ["--quick"] if a.quick else []
    if a.configs:
        extra += ["--configs", a.configs]
    modes = a.modes or ("eager" if a.quick else None)
    if modes:
        extra += ["--modes", modes]
    rows: list[dict[str, Any]] = []
    for backend in backends:
        for threads in (int(t) for t in a.threads.split(",")):
            rows += run_backend(backend, threads, extra, a.timeout)
    print_table(rows)
    from scalegmn.weightgraph.io import atomic_write

    atomic_write(a.out, json.dumps({"rows": rows}, indent=2))
    if a.markdown:
        atomic_write(a.markdown, markdown(rows) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
