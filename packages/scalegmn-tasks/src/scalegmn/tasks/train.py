"""Training and evaluation of metanetworks on zoos (PyTorch backend; `backend="jax"` runs the
same protocol in JAX, see `scalegmn.tasks.train_jax`).

The paper's protocol: AdamW, linear warm-up then a constant learning rate, gradient
clipping, model selection on the validation split, test at the best validation epoch.

Two tasks, chosen from the zoo's target: INR classification (`kind="class"`: cross-entropy,
accuracy) and generalisation prediction (`kind="regression"`: `MSE(sigmoid(f(G)), y)`,
Kendall's tau).

A run with an output folder writes `run.json` (its config), `metrics.jsonl`, `last.safetensors`
(everything needed to continue: model, optimiser, schedule, random states, history; written
atomically after every epoch) and `best/` (the model at the best validation epoch). `resume=True`
continues a killed run exactly where its last completed epoch ended.

Under `torchrun --nproc-per-node N` the same call trains data parallel
(`DistributedDataParallel`, gloo on CPU, NCCL on GPU): every global batch is split across the
processes and the loss is scaled so that the averaged gradient is the single-process one.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from scalegmn.weightgraph import Network, ScaleGMNConfig

from .distributed import barrier, init_distributed

ModelKind = Literal["scalegmn", "gmn", "gmn_canon", "mlp"]
Task = Literal["auto", "classification", "regression"]

RUN_FILE = "run.json"
STATE_FILE = "last.safetensors"
METRICS_FILE = "metrics.jsonl"
BEST_DIR = "best"


class TrainError(ValueError):
    """A run that cannot start: bad config, a zoo that does not fit, a resume that does not match."""


class LoopConfig(BaseModel):
    """The optimisation settings every training loop here shares (the paper's protocol).

    Attributes:
        lr: AdamW learning rate (constant after the warm-up).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        grad_clip: gradient norm clipping.
        batch_size: networks per step.
        epochs: passes over the (possibly truncated) train split.
        seed: model initialisation and batch order.
        max_train: use only the first `max_train` train networks.
    """

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=100, ge=0)
    grad_clip: float = Field(default=10.0, gt=0)
    batch_size: int = Field(default=32, ge=1)
    epochs: int = Field(default=10, ge=1)
    seed: int = 0
    max_train: int | None = Field(default=None, ge=1)


class RunConfig(LoopConfig):
    """One training run (unknown keys and impossible values are refused before any work).

    Attributes:
        zoo: the zoo folder (`scalegmn zoo build ...`).
        model: `"scalegmn"` (symmetry from the config, `"auto"` by default), `"gmn"` (the
            permutation-only GMN on group-normalised inputs), `"gmn_canon"` (GMN on
            canonicalised inputs) or `"mlp"` (an MLP on the flattened weights).
        gmn: the model configuration (for scalegmn and the GMN baselines).
        mlp_hidden: width of the MLP baseline.
        task: `"classification"`, `"regression"` (generalisation prediction), or `"auto"`
            (from the zoo's target kind).
        input_scaling: `"layer"` divides every layer's weights and biases by one scalar each,
            their root mean square over the training split (exact for every group: a fixed
            scalar per layer commutes with permutations, sign flips and scalings), so that
            tiny SIREN weights (~1e-2) reach the model at unit scale; `"none"` feeds raw weights.
        threads: torch threads per process (None: torch's default; the JAX backend ignores it:
            XLA's threads are fixed by `XLA_FLAGS` before jax starts).
        backend: `"torch"` (the default; data parallel under torchrun) or `"jax"` (the same
            protocol and run folder with `scalegmn.jax`; data parallel over `jax.devices()`).

    The optimisation settings are those of `LoopConfig`.
    """

    zoo: str
    model: ModelKind = "scalegmn"
    gmn: ScaleGMNConfig = Field(default_factory=lambda: ScaleGMNConfig(d_hidden=32, n_layers=2, d_out=10))
    mlp_hidden: int = Field(default=256, ge=1)
    task: Task = "auto"
    input_scaling: Literal["layer", "none"] = "layer"
    threads: int | None = Field(default=None, ge=1)
    backend: Literal["torch", "jax"] = "torch"


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read a run config from a JSON or YAML file, with a message naming the file on error."""
    from pydantic import ValidationError

    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: no such config file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return RunConfig.model_validate(yaml.safe_load(text))
        return RunConfig.model_validate_json(text)
    except (ValidationError, ValueError) as err:
        raise TrainError(f"{path}: invalid run config:\n{err}") from None


def layer_scales(networks: Sequence[Network]) -> tuple[list[float], list[float]]:
    """Per layer, the root mean square of the weights and of the biases over `networks`."""
    n_layers = len(networks[0].weights)
    sw = [float(np.sqrt(np.mean([np.mean(n.weights[k].astype(np.float64) ** 2) for n in networks])))
          for k in range(n_layers)]
    sb = [float(np.sqrt(np.mean([np.mean(n.biases[k].astype(np.float64) ** 2) for n in networks])))
          for k in range(n_layers)]
    return [max(v, 1e-12) for v in sw], [max(v, 1e-12) for v in sb]


def scale_layers(networks: Sequence[Network], scales: tuple[list[float], list[float]]) -> list[Network]:
    """Divide each layer's weights and biases by the given scalars (see `layer_scales`)."""
    sw, sb = scales
    return [Network(n.spec, [w / np.asarray(s, w.dtype) for w, s in zip(n.weights, sw, strict=True)],
                    [b / np.asarray(s, b.dtype) for b, s in zip(n.biases, sb, strict=True)])
            for n in networks]


def prepare_inputs(kind: ModelKind, networks: Sequence[Network]) -> list[Network]:
    """The input transformation of each baseline (none for ScaleGMN and the MLP)."""
    from scalegmn.symmetry import canonicalize, normalize_inputs

    if kind == "gmn":
        return [normalize_inputs(n) for n in networks]
    if kind == "gmn_canon":
        return [canonicalize(n, sort=True) for n in networks]
    return list(networks)


def build_model(cfg: RunConfig, n_params: int) -> Any:
    """The torch module for `cfg.model` (seeded by `cfg.seed`)."""
    import torch

    torch.manual_seed(cfg.seed)
    if cfg.model == "mlp":
        h = cfg.mlp_hidden
        return torch.nn.Sequential(
            torch.nn.Linear(n_params, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(),
            torch.nn.Linear(h, cfg.gmn.d_out),
        )
    from scalegmn.torch import ScaleGMN

    return ScaleGMN(model_gmn_config(cfg))


def model_gmn_config(cfg: RunConfig) -> ScaleGMNConfig:
    """The ScaleGMN configuration of a run: `cfg.gmn`, permutation-only for the GMN baselines."""
    if cfg.model in ("gmn", "gmn_canon"):
        return cfg.gmn.model_copy(update={"symmetry": "permutation"})
    return cfg.gmn


def _batch(cfg: RunConfig, nets: Sequence[Network]) -> Any:
    import torch

    if cfg.model == "mlp":
        return torch.from_numpy(np.stack([n.flat() for n in nets]).astype(np.float32))
    from scalegmn.torch import collate

    return collate(nets, torch.float32)


def kendall_tau(pred: np.ndarray, target: np.ndarray) -> float:
    """Kendall's tau-b between predictions and targets (scipy); 0 where it is undefined (constant input)."""
    from scipy.stats import kendalltau

    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return 0.0
    tau = float(kendalltau(pred, target).statistic)
    return 0.0 if math.isnan(tau) else tau


def _load_split_data(cfg: RunConfig) -> tuple[dict[str, tuple[list[Network], np.ndarray]], str]:
    from .datasets import open_zoo
    from .zoo.store import Zoo, ZooError

    try:
        zoo = Zoo(cfg.zoo)
    except (ZooError, OSError, ValueError) as err:
        raise TrainError(f"{cfg.zoo}: cannot open the zoo: {err}") from None
    task = cfg.task
    if task == "auto":
        task = "classification" if zoo.manifest.target.kind == "class" else "regression"
    data: dict[str, tuple[list[Network], np.ndarray]] = {}
    for s in ("train", "val", "test"):
        ds = open_zoo(cfg.zoo, s)
        n = len(ds) if s != "train" or cfg.max_train is None else min(len(ds), cfg.max_train)
        if n == 0:
            raise TrainError(f"{cfg.zoo}: the {s} split is empty")
        items = [ds[i] for i in range(n)]
        data[s] = ([a for a, _ in items], np.array([t for _, t in items]))
    return data, task


def _check_data(cfg: RunConfig, data: dict[str, tuple[list[Network], np.ndarray]], task: str) -> None:
    spec = data["train"][0][0].spec
    if cfg.model != "mlp":
        try:
            cfg.gmn.check_compatible(spec)
        except ValueError as err:
            raise TrainError(f"{cfg.zoo}: the zoo does not fit the model: {err}") from None
    if task == "classification":
        n_classes = int(max(int(y.max()) for _, y in data.values())) + 1
        if n_classes > cfg.gmn.d_out:
            raise TrainError(f"{cfg.zoo}: the zoo has {n_classes} classes but gmn.d_out={cfg.gmn.d_out}; "
                             f"set gmn.d_out to at least {n_classes}")
    if cfg.model == "mlp":
        sizes = {n.n_params() for nets, _ in data.values() for n in nets}
        if len(sizes) > 1:
            raise TrainError(f"{cfg.zoo}: the MLP baseline needs one architecture; the zoo has "
                             f"networks of {sorted(sizes)} parameters")


def prepare_run_data(cfg: RunConfig) -> tuple[dict[str, tuple[list[Network], np.ndarray]], str]:
    """The three splits as the model sees them (scaled, baseline-transformed) and the task.

    Raises:
        TrainError: the zoo cannot be opened or does not fit the model.
    """
    data, task = _load_split_data(cfg)
    _check_data(cfg, data, task)
    if cfg.input_scaling == "layer":
        scales = layer_scales(data["train"][0])
        data = {s: (scale_layers(nets, scales), y) for s, (nets, y) in data.items()}
    return {s: (prepare_inputs(cfg.model, nets), y) for s, (nets, y) in data.items()}, task


def evaluate_run(run: str | Path, split: str = "test") -> tuple[float, str]:
    """The metric of a run's best model (`run/best`) on one split of its zoo (with the run's backend).

    Returns:
        `(value, metric name)`: accuracy or Kendall's tau.
    """

    run = Path(run)
    if not (run / RUN_FILE).is_file() or not (run / BEST_DIR).is_dir():
        raise TrainError(f"{run}: not a finished run folder (needs {RUN_FILE} and {BEST_DIR}/)")
    if split not in ("train", "val", "test"):
        raise TrainError(f"unknown split {split!r}; use train, val or test")
    cfg = RunConfig.model_validate_json((run / RUN_FILE).read_text())
    if cfg.backend == "jax":
        from .train_jax import evaluate_run_jax

        return evaluate_run_jax(cfg, run / BEST_DIR, split)
    data, task = prepare_run_data(cfg)
    model = build_model(cfg, data["train"][0][0].n_params())
    if cfg.model == "mlp":
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(run / BEST_DIR / "model.safetensors")))
    else:
        from scalegmn.torch import load_checkpoint

        model = load_checkpoint(run / BEST_DIR)
    nets, ys = data[split]
    classify = task == "classification"
    value = score(model, _eval_batches(cfg, nets, ys), classify)
    return value, "accuracy" if classify else "kendall_tau"


def _eval_batches(cfg: RunConfig, nets: Sequence[Network], ys: np.ndarray,
                  make_batch: Callable[[RunConfig, Sequence[Network]], Any] = _batch) -> list[tuple[Any, np.ndarray]]:
    """A split as model-ready batches of 256 (`make_batch`: the backend's) with their targets."""
    return [(make_batch(cfg, nets[i:i + 256]), ys[i:i + 256]) for i in range(0, len(nets), 256)]


def metric(preds: Sequence[np.ndarray], batches: Sequence[tuple[Any, np.ndarray]], classify: bool) -> float:
    """Accuracy of predicted classes, or Kendall's tau of predicted values, against the
    targets of `batches` (per batch, in order)."""
    pr, yy = np.concatenate(preds), np.concatenate([y for _, y in batches])
    return float((pr == yy).mean()) if classify else kendall_tau(pr, yy)


def score(model: Any, batches: Sequence[tuple[Any, np.ndarray]], classify: bool) -> float:
    """Accuracy (classification) or Kendall's tau of `sigmoid(f(G))` (regression) over batches."""
    import torch

    model.eval()
    preds = []
    with torch.no_grad():
        for xb, _ in batches:
            p = model(xb)
            preds.append(p.argmax(1).numpy() if classify else torch.sigmoid(p[:, 0]).numpy())
    return metric(preds, batches, classify)


def _start_run_dir(out: Path, cfg: RunConfig, resume: bool) -> bool:
    """Check/create the run folder; return whether there is a state to resume from."""
    run_file = out / RUN_FILE
    if run_file.exists():
        old = json.loads(run_file.read_text())
        if not resume:
            raise TrainError(f"{out} already holds a run; pass --resume to continue it or choose a new folder")
        new = json.loads(cfg.model_dump_json())
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise TrainError(f"{out}: the config differs from the run being resumed in {diff}; "
                             f"resume with the same config (see {run_file})")
        return (out / STATE_FILE).exists()
    if resume and out.exists() and any(out.iterdir()):
        raise TrainError(f"{out} holds no {RUN_FILE}: nothing to resume")
    return False


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _save_state(path: Path, model: Any, opt: Any, sched: Any, rng: np.random.Generator,
                meta: dict[str, Any]) -> None:
    """Everything needed to continue the run, in one safetensors file (atomic)."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{idx}.{k}"] = (v if isinstance(v, torch.Tensor) else torch.tensor(v)).contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    info = {"meta": meta, "param_groups": osd["param_groups"], "sched": sched.state_dict(),
            "rng_numpy": rng.bit_generator.state}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(info, default=_json_default)})
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _load_state(path: Path, model: Any, opt: Any, sched: Any, rng: np.random.Generator) -> dict[str, Any]:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        info = json.loads(f.metadata()["state"])
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    sched.load_state_dict(info["sched"])
    rng.bit_generator.state = info["rng_numpy"]
    torch.set_rng_state(tensors["rng.torch"])
    meta: dict[str, Any] = info["meta"]
    return meta


def train_run(
    cfg: RunConfig,
    out: str | Path | None = None,
    resume: bool = False,
    log_path: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train on the zoo's train split, select on val, report test at the best val epoch.

    Args:
        cfg: the run.
        out: the run folder (config, metrics, resumable state, best model); None keeps
            nothing on disk.
        resume: continue the run in `out` (its config must equal `cfg`).
        log_path: also append per-epoch metrics to this JSONL file.
        progress: show a progress bar.
        on_epoch: called with each epoch's metrics row.

    Returns:
        A dict with `task`, `metric` (`"accuracy"` or `"kendall_tau"`), `best_epoch`,
        `val`/`test` (the metric at the best val epoch; also as `val_acc`/`test_acc` or
        `val_tau`/`test_tau`), `seconds`, and the per-epoch `history`.

    Raises:
        TrainError: before any training, when the zoo, the config or the resume do not fit
            (for `backend="jax"` also: jax is not installed, or the call runs under torchrun).
    """
    if cfg.backend == "jax":
        from .train_jax import train_run_jax

        return train_run_jax(cfg, out=out, resume=resume, log_path=log_path, progress=progress,
                             on_epoch=on_epoch)
    import torch
    from rich.progress import Progress

    rank, world = init_distributed()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out) if out is not None else None
    if world > 1 and cfg.batch_size < world:
        raise TrainError(f"batch_size={cfg.batch_size} is smaller than the {world} processes; "
                         f"every process needs at least one network per batch")
    has_state = _start_run_dir(out_dir, cfg, resume) if out_dir is not None else False
    barrier(world)  # every process has checked the folder before the first write
    data, task = prepare_run_data(cfg)
    if out_dir is not None and rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(out_dir / RUN_FILE, json.loads(cfg.model_dump_json()))

    model = build_model(cfg, data["train"][0][0].n_params())
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1)))
    rng = np.random.default_rng(cfg.seed)
    classify = task == "classification"
    short = "acc" if classify else "tau"
    pre = {s: _eval_batches(cfg, nets, y) for s, (nets, y) in data.items() if s != "train"}

    def loss_fn(pred: Any, y: np.ndarray, scale: float) -> Any:
        if classify:
            return torch.nn.functional.cross_entropy(pred, torch.from_numpy(y.astype(np.int64)),
                                                     reduction="sum") * scale
        target = torch.from_numpy(y.astype(np.float32))
        return ((torch.sigmoid(pred[:, 0]) - target) ** 2).sum() * scale

    def evaluate(split: str) -> float:
        return score(model, pre[split], classify)

    nets, ys = data["train"]
    steps_per_epoch = math.ceil(len(nets) / cfg.batch_size)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val": -math.inf, "test": math.nan, "best_epoch": -1}
    start_epoch, seconds_before = 0, 0.0
    if has_state and out_dir is not None:
        meta = _load_state(out_dir / STATE_FILE, model, opt, sched, rng)
        history, best, start_epoch = meta["history"], meta["best"], meta["epoch"] + 1
        seconds_before = meta["seconds"]
    logs = [Path(p) for p in (log_path, out_dir / METRICS_FILE if out_dir else None) if p is not None]
    t0 = time.perf_counter() - seconds_before
    with Progress(disable=not progress or rank != 0, transient=True) as bar:
        task_bar = bar.add_task(f"{cfg.model}", total=cfg.epochs * steps_per_epoch,
                                completed=start_epoch * steps_per_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            order = rng.permutation(len(nets))
            losses = []
            for k in range(steps_per_epoch):
                idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                local = idx[rank::world]
                # DDP averages gradients over processes: scale so the average is d(mean loss).
                scale = world / len(idx)
                loss = loss_fn(net(_batch(cfg, [nets[i] for i in local])), ys[local], scale)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                losses.append(_global_sum(loss.detach(), world) / world)
                bar.advance(task_bar)
            val = evaluate("val")
            row = {"epoch": epoch, "loss": float(np.mean(losses)), f"val_{short}": val,
                   "seconds": time.perf_counter() - t0}
            if val > best["val"]:
                best = {"val": val, "test": evaluate("test"), "best_epoch": epoch}
                if out_dir is not None and rank == 0:
                    _save_best(cfg, model, out_dir / BEST_DIR)
            history.append(row)
            if rank == 0:
                append_row(logs, cfg.model, row)
                if out_dir is not None:
                    _save_state(out_dir / STATE_FILE, model, opt, sched, rng,
                                {"epoch": epoch, "history": history, "best": best,
                                 "seconds": row["seconds"]})
            if on_epoch:
                on_epoch(row)
    return finish_run(cfg, task, best, history, time.perf_counter() - t0, len(nets),
                      sum(p.numel() for p in model.parameters()), out_dir if rank == 0 else None)


def append_row(logs: Sequence[Path], model: str, row: dict[str, Any]) -> None:
    """Append one epoch's metrics row, tagged with the model kind, to each JSONL log."""
    for p in logs:
        with p.open("a") as fh:
            fh.write(json.dumps({"model": model, **row}) + "\n")


def finish_run(cfg: RunConfig, task: str, best: dict[str, Any], history: list[dict[str, Any]],
               seconds: float, n_train: int, n_params_model: int, out_dir: Path | None) -> dict[str, Any]:
    """The result of a run (the metric at the best validation epoch, history, sizes); with
    `out_dir` also written as `result.json` with the training curves as `curves.png`."""
    classify = task == "classification"
    short = "acc" if classify else "tau"
    result = {"task": task, "metric": "accuracy" if classify else "kendall_tau", "best_epoch": best["best_epoch"],
              "val": best["val"], "test": best["test"], f"val_{short}": best["val"], f"test_{short}": best["test"],
              "seconds": seconds, "history": history, "n_train": n_train, "n_params_model": n_params_model}
    if out_dir is not None:
        _write_json_atomic(out_dir / "result.json", result)
        _plot_history(history, short, out_dir / "curves.png", cfg.model)
    return result


def _global_sum(x: Any, world: int) -> float:
    if world > 1:
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
    return float(x)


def _save_best(cfg: RunConfig, model: Any, path: Path) -> None:
    if cfg.model == "mlp":
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        tmp = path / "model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        os.replace(tmp, path / "model.safetensors")
        return
    from scalegmn.torch import save_checkpoint

    save_checkpoint(model, path)


def _plot_history(history: list[dict[str, Any]], short: str, path: Path, title: str) -> None:
    """Training loss and validation metric per epoch, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
    a1.plot(ep, [h["loss"] for h in history], marker="o")
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss")
    a2.plot(ep, [h[f"val_{short}"] for h in history], marker="o")
    a2.set_xlabel("epoch")
    a2.set_ylabel(f"validation {'accuracy' if short == 'acc' else 'Kendall tau'}")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)
