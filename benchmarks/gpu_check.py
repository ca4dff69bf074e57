"""GPU check: the library on a CUDA device, end to end, in one command (under 5 minutes).

Usage: `python benchmarks/gpu_check.py [--smoke] [--json FILE] [--device DEV] [--only SECTIONS]
[--inject-failure]`
(or `nox -s gpu_check -- ...`). It prints a table, writes JSON and exits nonzero on any failure:

1. equivariance on the device: torch ScaleGMN and ScaleGMN-B, invariant and equivariant
   heads, float64 and float32, under sampled group elements (ReLU: permutations and positive
   scalings; tanh, sine: permutations and sign flips), worst relative error against the
   dtype's tolerance; each with a negative control that must fail (the permutation-only
   model under scalings or sign flips);
2. torch <-> JAX parity: a torch model on the device saved with `scalegmn.torch.save_checkpoint`,
   loaded with `scalegmn.jax.load_checkpoint` on `jax.devices()[0]`, outputs compared
   (float64 1e-10, float32 1e-5 relative) on dense MLP and CNN batches and a mixed
   (disjoint-union) batch (smoke mode: float64 on MLPs, float32 on CNNs);
3. the training-step benchmark of both backends (`bench_torch.run_config`,
   `bench_jax.run_config`) on the models of four presets at batch 64, 128, 256: networks/s
   and peak device memory (smoke mode: JAX on two of the presets);
4. two epochs of the preset `inr-mnist-scalegmn` on fake DWS MNIST INRs written in the
   published layout, checking that the loss is finite and the run folder complete.

Without a CUDA GPU (or with `--smoke`) the same runs on the CPU at tiny sizes (smoke mode),
and the first line says so; its JAX programs are compiled without LLVM optimisation (at
tiny sizes compiling is most of the time), so its timings only show that the rows run.
`--inject-failure` runs the first equivariance check on the
permutation-only model, so that check fails and the exit code shows it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SECTIONS = ("equivariance", "parity", "benchmark", "training")
TRAIN_PRESET = "inr-mnist-scalegmn"
BUDGET_S = 300.0
"""The full check on a GPU must finish within this (a failed check otherwise; smoke mode has no limit)."""
NEGATIVE_MIN = 1e-4
"""A negative control passes when its error is above this (a broken symmetry moves outputs by O(1))."""
TINY = {"d_hidden": 8, "mlp_hidden": 8, "readout_hidden": 8, "n_layers": 1}
"""ScaleGMNConfig overrides of the presets' models in smoke mode."""
SMOKE_JAX_PRESETS = ("inr-mnist-scalegmn", "genpred-cifar10gs-relu-scalegmn-b")
"""The presets whose JAX step smoke mode times (each JAX step is compiled: ~10 s on a loaded CPU)."""


@dataclass(frozen=True)
class Plan:
    """Sizes of one run of the check (full on a GPU, tiny in smoke mode)."""

    smoke: bool
    device: str
    batches: tuple[int, ...]
    repeats: int
    warmup: int
    n_elements: int
    overrides: dict[str, Any] = field(default_factory=dict)
    n_train: int = 96
    n_val: int = 32
    n_test: int = 32
    train_batch: int = 32

    @staticmethod
    def make(smoke: bool, device: str) -> Plan:
        """The full plan, or the tiny one for smoke mode."""
        if smoke:
            return Plan(True, device, batches=(4,), repeats=2, warmup=1, n_elements=2, overrides=dict(TINY),
                        n_train=12, n_val=4, n_test=4, train_batch=4)
        return Plan(False, device, batches=(64, 128, 256), repeats=5, warmup=2, n_elements=4)


class Report:
    """The checks' results: one row per check, printed as a table and written as JSON."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []
        self.sections: dict[str, Any] = {}

    def add(self, section: str, name: str, value: float | None, limit: str, ok: bool, detail: str = "") -> None:
        """Record one check (`value` against `limit`, e.g. `"<= 1e-10"`)."""
        self.checks.append({"section": section, "check": name, "value": value, "limit": limit, "ok": bool(ok),
                            "detail": detail})

    def run(self, section: str, fn: Callable[[], Any]) -> None:
        """Run a section; an exception is recorded as one failed check naming it."""
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as err:  # a broken section is a failure to report, not a traceback
            out = None
            self.add(section, "runs", None, "no error", False, f"{type(err).__name__}: {str(err)[:300]}")
        self.sections[section] = {"seconds": time.perf_counter() - t0, **({"result": out} if out else {})}

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(c["ok"] for c in self.checks)


# ----------------------------------------------------------------------------- models


def torch_model(cfg: Any, dtype: Any, device: str, seed: int = 0) -> Any:
    """A torch ScaleGMN in eval mode on `device` with nonzero biases (zero biases would hide terms)."""
    import torch

    from scalegmn.torch import ScaleGMN

    torch.manual_seed(seed)
    model = ScaleGMN(cfg).to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.fill_(0.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.3)
    return model.to(device)


def model_fn(model: Any, dtype: Any, device: str, head: str) -> Callable[[Any], Any]:
    """`Network -> output` of a torch model on `device` (an array, or the edited `Network`)."""
    import torch

    from scalegmn.torch import collate

    def f(net: Any) -> Any:
        with torch.no_grad():
            out = model(collate([net], dtype).to(device))
        return out.to_networks()[0] if head == "equivariant" else out.double().cpu().numpy()[0]

    return f


# ----------------------------------------------------------------------------- 1. equivariance


def equivariance(report: Report, plan: Plan, inject: bool) -> dict[str, Any]:
    """Worst equivariance errors on the device, with a failing negative control per case."""
    import numpy as np
    import torch

    from scalegmn.symmetry import sample_element
    from scalegmn.symmetry.testing import DEFAULT_RTOL, equivariance_error
    from scalegmn.torch import ScaleGMNConfig
    from scalegmn.weightgraph import NetworkSpec, random_network

    rng = np.random.default_rng(0)
    first = True
    for activation in ("relu", "tanh", "sine"):
        spec = NetworkSpec.mlp([3, 6, 5, 2], activation=activation)
        net = random_network(spec, rng=1, scale=1.0)
        elements = [sample_element(spec, rng, extreme=True) for _ in range(plan.n_elements)]
        moves = [sample_element(spec, rng, permute=False) for _ in range(plan.n_elements)]
        for bidirectional in (False, True):
            for head in ("invariant", "equivariant"):
                model_name = f"{'ScaleGMN-B' if bidirectional else 'ScaleGMN'} {head}"

                def cfg(symmetry: str, bidirectional: bool = bidirectional, head: str = head) -> ScaleGMNConfig:
                    return ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=3, mlp_hidden=7, symmetry=symmetry,
                                          bidirectional=bidirectional, head=head)

                for dtype in (torch.float64, torch.float32):
                    tol = DEFAULT_RTOL[np.dtype(str(dtype).split(".")[1])]
                    injected = inject and first
                    first = False
                    model = torch_model(cfg("permutation" if injected else "auto"), dtype, plan.device)
                    f = model_fn(model, dtype, plan.device, head)
                    err = max(equivariance_error(f, net, g, head) for g in elements)
                    report.add("equivariance", f"{model_name} {activation} {str(dtype)[6:]}", err, f"<= {tol:.0e}",
                               err <= tol, "injected failure: permutation-only model" if injected else
                               f"{plan.n_elements} elements, multipliers 1e-3..1e3")
                perm = torch_model(cfg("permutation"), torch.float64, plan.device)
                err = max(equivariance_error(model_fn(perm, torch.float64, plan.device, head), net, g, head)
                          for g in moves)
                what = "scalings" if activation == "relu" else "sign flips"
                report.add("equivariance", f"control: permutation-only {model_name} {activation}", err,
                           f"> {NEGATIVE_MIN:.0e}", err > NEGATIVE_MIN, f"must fail under {what}")
    return {"device": plan.device}


# ----------------------------------------------------------------------------- 2. parity


def parity(report: Report, plan: Plan, tmp: Path) -> dict[str, Any]:
    """torch on the device -> checkpoint -> JAX on its default device: the same outputs."""
    import jax
    import numpy as np
    import torch

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import scalegmn.jax as sgj
    import scalegmn.torch as sgt
    from scalegmn.weightgraph import NetworkSpec, random_network

    batches = {
        "dense MLPs": [random_network(NetworkSpec.mlp([2, 5, 4, 2], a), rng=k) for k, a in
                       enumerate(("relu", "tanh", "relu"))],
        "dense CNNs": [random_network(NetworkSpec.small_cnn("relu", channels=3, image_size=6, n_classes=2), rng=k)
                       for k in range(3)],
        "mixed (sparse)": [random_network(NetworkSpec.mlp([2, 5, 4, 2], "relu"), rng=5),
                           random_network(NetworkSpec.mlp([3, 6, 2], "sine"), rng=6),
                           random_network(NetworkSpec.small_cnn("tanh", channels=3, image_size=6, n_classes=2),
                                          rng=7)],
    }

    def flat(x: Any) -> Any:
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        return x.astype(np.float64).reshape(-1)

    # Both backends compute float32 products in full float32 (no TF32) for the comparison.
    torch.backends.cuda.matmul.allow_tf32 = False
    with jax.default_matmul_precision("highest"):
        for bidirectional in (False, True):
            for head in ("invariant", "equivariant"):
                for tdtype, jdtype, tol in ((torch.float64, jnp.float64, 1e-10), (torch.float32, jnp.float32, 1e-5)):
                    cfg = sgt.ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=3, d_edge_in=9, mlp_hidden=7,
                                             bidirectional=bidirectional, head=head)
                    tm = torch_model(cfg, tdtype, plan.device, seed=3)
                    path = tmp / f"ckpt-{bidirectional}-{head}-{str(tdtype)[6:]}"
                    sgt.save_checkpoint(tm, path)
                    jm = sgj.load_checkpoint(path)
                    for name, nets in batches.items():
                        if head == "equivariant" and name.startswith("mixed"):
                            continue  # the edited graphs of a disjoint union are laid out per backend
                        if plan.smoke and (name == "dense CNNs") != (tdtype == torch.float32):
                            continue  # each call compiles a JAX program: smoke mode takes a subset
                        with torch.no_grad():
                            t_out = tm(sgt.collate(nets, tdtype).to(plan.device))
                        j_out = jm(sgj.collate(nets, jdtype))
                        if head == "invariant":
                            pairs = [(flat(t_out), flat(j_out))]
                        else:
                            pairs = [(flat(t_out.node_features), flat(j_out[0])),
                                     (flat(t_out.edge_features), flat(j_out[1]))]
                        err = max(float(np.max(np.abs(a - b))) / max(1.0, float(np.max(np.abs(a))))
                                  for a, b in pairs)
                        label = f"{'ScaleGMN-B' if bidirectional else 'ScaleGMN'} {head} {name} {str(tdtype)[6:]}"
                        report.add("parity", label, err, f"<= {tol:.0e}", err <= tol,
                                   f"torch {plan.device} vs jax {jax.devices()[0]}")
    return {"jax_devices": [str(d) for d in jax.devices()], "jax_platform": jax.devices()[0].platform}


# ----------------------------------------------------------------------------- 3. benchmark


def benchmark(report: Report, plan: Plan) -> dict[str, Any]:
    """Training steps of both backends on the presets' models at each batch size."""
    import torch

    sys.path.insert(0, str(HERE))
    import bench_jax
    import bench_torch
    import benchcommon

    threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    seconds = 0.25 if plan.smoke else 1.0
    rates = {"torch": bench_torch.matmul_rate(threads, seconds, plan.device), "jax": bench_jax.matmul_rate(seconds)}
    # torch first: JAX's allocator keeps what it took, torch's cache is emptied after each row.
    for backend in ("torch", "jax"):
        for name in benchcommon.PRESET_CONFIGS:
            for batch in plan.batches:
                if backend == "jax" and plan.smoke and name not in SMOKE_JAX_PRESETS:
                    continue
                try:
                    if backend == "torch":
                        row = bench_torch.run_config(name, "eager", threads, plan.repeats, plan.warmup,
                                                     rates["torch"], batch=batch, device=plan.device,
                                                     overrides=plan.overrides)
                    else:
                        row = bench_jax.run_config(name, threads, plan.repeats, plan.warmup, rates["jax"],
                                                   batch=batch, overrides=plan.overrides)
                except Exception as err:  # one failing row is reported; the others still run
                    row = {"config": name, "backend": backend, "batch": batch,
                           "error": f"{type(err).__name__}: {str(err)[:300]}"}
                rows.append(row)
                if torch.device(plan.device).type == "cuda":
                    torch.cuda.empty_cache()
                rate = row.get("networks_per_s")
                mem = row.get("peak_device_mb")
                detail = row.get("error") or (f"{row['step_ms']:.1f} ms/step, {row['gflop_per_network']:.3g} "
                                              f"GFLOP/network, peak {'-' if mem is None else f'{mem:.0f} MB'} "
                                              f"on {row['device']}")
                report.add("benchmark", f"{name} {backend} batch {batch}", rate, "networks/s > 0",
                           rate is not None and math.isfinite(rate) and rate > 0, detail)
    return {"rows": rows, "threads": threads, "matmul_gflop_per_s": rates}


# ----------------------------------------------------------------------------- 4. training


def _cli_takes_presets() -> bool:
    from scalegmn.tasks.cli import train

    params = inspect.signature(train).parameters
    return "preset" in params and "data" in params


def _fake_zoo(root: Path, zoo: Path, plan: Plan) -> None:
    """The fake DWS folder read by the published loader and written as a project zoo."""
    import numpy as np

    from scalegmn.tasks.datasets import load_dws_inrs
    from scalegmn.tasks.zoo import Manifest, write_shard
    from scalegmn.tasks.zoo.manifest import SPLITS, TargetInfo
    from scalegmn.tasks.zoo.store import finalize

    nets, labels, split = [], [], []
    for s in SPLITS:
        ds = load_dws_inrs(root, s, val_size=plan.n_val, progress=False)
        for i in range(len(ds)):
            net, y = ds[i]
            nets.append(net)
            labels.append(int(y))
            split.append(SPLITS.index(s))
    spec = nets[0].spec
    ids = np.arange(len(nets))
    cols = {"id": ids, "target": np.array(labels), "split": np.array(split, np.int8), "group": ids}
    ws = [np.stack([n.weights[k] for n in nets]) for k in range(spec.n_layers)]
    bs = [np.stack([n.biases[k] for n in nets]) for k in range(spec.n_layers)]
    rec = write_shard(zoo, 0, 0, spec, 0, ws, bs, cols)
    finalize(zoo, Manifest(kind="inr", specs=[spec], n_networks=len(nets), n_shards=1, shards=[rec],
                           target=TargetInfo(name="label", kind="class", n_classes=10),
                           source={"name": "fake DWS MNIST INRs in the published layout"}))


def training(report: Report, plan: Plan, tmp: Path) -> dict[str, Any]:
    """Two epochs of `TRAIN_PRESET` on fake published data; finite losses, a complete run folder."""
    from scalegmn.tasks.datasets.testing import write_dws_mnist
    from scalegmn.tasks.presets import get_preset
    from scalegmn.tasks.train import RunConfig, train_run

    root, out = tmp / "dws-mnist", tmp / "run"
    write_dws_mnist(root, n_train=plan.n_train + plan.n_val, n_test=plan.n_test)
    sets = ["epochs=2", f"batch_size={plan.train_batch}", "warmup_steps=1",
            *(f"gmn.{k}={v}" for k, v in plan.overrides.items())]
    has_device = "device" in RunConfig.model_fields
    if _cli_takes_presets():
        how = "scalegmn train --preset --data (the published layout read directly)"
        cmd = [sys.executable, "-c", "from scalegmn.tasks.cli import app; app()", "train", "--preset", TRAIN_PRESET,
               "--data", str(root), "--out", str(out), "--quiet", f"--set=data.val_size={plan.n_val}",
               *(f"--set={s}" for s in sets), *(["--device", plan.device] if has_device else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"scalegmn train exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    else:
        how = ("Python API: this version's `scalegmn train` takes no --preset/--data, so the fake DWS "
               "folder is read with load_dws_inrs and written as a project zoo (scalegmn.tasks.zoo)")
        zoo = tmp / "zoo"
        _fake_zoo(root, zoo, plan)
        extra = [f"device={plan.device}"] if has_device else []
        train_run(get_preset(TRAIN_PRESET, [f"zoo={zoo}", *sets, *extra]), out=out, progress=False)
    device = plan.device if has_device else "cpu (this version's training loop has no device option)"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r.get("loss") for r in rows]
    finite = len(losses) == 2 and all(isinstance(v, float) and math.isfinite(v) for v in losses)
    report.add("training", f"{TRAIN_PRESET}: 2 epochs, finite loss", max(losses, default=None) if finite else None,
               "2 finite epochs", finite, f"losses {losses} on {device}; {how}")
    need = ["run.json", "metrics.jsonl", "last.safetensors", "result.json", "curves.png", "best"]
    missing = [n for n in need if not (out / n).exists()]
    best = out / "best"
    if best.is_dir() and not any(best.iterdir()):
        missing.append("best/ (empty)")
    report.add("training", "run folder complete", len(need) - len(missing), f"{len(need)} of {len(need)}",
               not missing, f"missing: {', '.join(missing)}" if missing else ", ".join(need))
    return {"preset": TRAIN_PRESET, "device": device, "how": how, "losses": losses}


# ----------------------------------------------------------------------------- output


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2e}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5) else f"{v:.3g}"
    return str(v)


def print_table(report: Report, title: str) -> None:
    """The checks as a rich table."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col, justify in (("section", "left"), ("check", "left"), ("value", "right"), ("limit", "left"),
                         ("", "left"), ("detail", "left")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in report.checks:
        t.add_row(c["section"], c["check"], _fmt(c["value"]), c["limit"],
                  "[green]ok[/green]" if c["ok"] else "[red]FAIL[/red]", c["detail"])
    Console(width=200).print(t)


def main(argv: list[str] | None = None) -> int:
    """Run every section, print the table, write the JSON; 0 when every check passed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (automatic without a CUDA GPU)")
    p.add_argument("--json", type=Path, default=Path("bench-results/gpu_check.json"), help="where to write the JSON")
    p.add_argument("--device", default=None, help="torch device (default: cuda when there is one, else cpu)")
    p.add_argument("--inject-failure", action="store_true", help="make the first equivariance check fail")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    a = p.parse_args(argv)
    only = [x for x in a.only.split(",") if x]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        p.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    # JAX would take most of the GPU's memory at start, leaving torch none.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import torch

    cuda = torch.cuda.is_available()
    smoke = a.smoke or not cuda
    device = a.device or ("cuda" if cuda and not a.smoke else "cpu")
    if smoke:
        why = "--smoke" if a.smoke else "no CUDA GPU (torch.cuda.is_available() is False)"
        print(f"gpu_check: SMOKE MODE on {device}, tiny sizes ({why}); not a GPU measurement", flush=True)
    else:
        print(f"gpu_check: full check on {device} ({torch.cuda.get_device_name(device)})", flush=True)
    if smoke and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        # At tiny sizes compiling dominates; smoke timings are not measurements anyway.
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    plan = Plan.make(smoke, device)
    report = Report()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        sections: dict[str, Callable[[], Any]] = {
            "equivariance": lambda: equivariance(report, plan, a.inject_failure),
            "parity": lambda: parity(report, plan, Path(tmp)),
            "benchmark": lambda: benchmark(report, plan),
            "training": lambda: training(report, plan, Path(tmp)),
        }
        for name in SECTIONS:
            if name in only:
                report.run(name, sections[name])
    seconds = time.perf_counter() - t0
    if not smoke and only == list(SECTIONS):
        report.add("runtime", "the whole check", seconds, f"<= {BUDGET_S:.0f} s", seconds <= BUDGET_S,
                   "the GPU check's time budget")
    n_bad = sum(not c["ok"] for c in report.checks)
    title = (f"scalegmn GPU check ({'smoke, ' if smoke else ''}{device}): {len(report.checks) - n_bad} of "
             f"{len(report.checks)} checks passed in {seconds:.0f} s")
    print_table(report, title)
    from scalegmn.weightgraph.io import atomic_write

    doc = {"mode": "smoke" if smoke else "gpu", "device": device, "torch": torch.__version__,
           "cuda_device": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
           "ok": report.ok, "seconds": seconds, "loadavg": list(os.getloadavg()),
           "injected_failure": a.inject_failure, "sections_run": only, "checks": report.checks, "sections": report.sections}
    atomic_write(a.json, json.dumps(doc, indent=2, default=str))
    print(f"wrote {a.json}; {'all checks passed' if report.ok else f'{n_bad} check(s) FAILED'}", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
