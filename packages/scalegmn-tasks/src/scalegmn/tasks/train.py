"""Training and evaluation of metanetworks on zoos (PyTorch backend).

The paper's protocol: AdamW, linear warm-up then a constant learning rate, gradient
clipping, model selection on the validation split, test at the best validation epoch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from scalegmn.weightgraph import Network, ScaleGMNConfig

ModelKind = Literal["scalegmn", "gmn", "gmn_canon", "mlp"]


class RunConfig(BaseModel):
    """One training run (unknown keys and impossible values are refused before any work).

    Attributes:
        zoo: the zoo folder (`scalegmn zoo build ...`).
        model: `"scalegmn"` (symmetry from the config, `"auto"` by default), `"gmn"` (the
            permutation-only GMN on group-normalised inputs), `"gmn_canon"` (GMN on
            canonicalised inputs) or `"mlp"` (an MLP on the flattened weights).
        gmn: the model configuration (for scalegmn and the GMN baselines).
        mlp_hidden: width of the MLP baseline.
    """

    model_config = ConfigDict(extra="forbid")
    zoo: str
    model: ModelKind = "scalegmn"
    gmn: ScaleGMNConfig = Field(default_factory=lambda: ScaleGMNConfig(d_hidden=32, n_layers=2, d_out=10))
    mlp_hidden: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=100, ge=0)
    grad_clip: float = Field(default=10.0, gt=0)
    batch_size: int = Field(default=32, ge=1)
    epochs: int = Field(default=10, ge=1)
    seed: int = 0
    max_train: int | None = Field(default=None, ge=1)


def prepare_inputs(kind: ModelKind, networks: Sequence[Network]) -> list[Network]:
    """The input transformation of each baseline (none for ScaleGMN and the MLP)."""
    from scalegmn.symmetry import canonicalize, normalize_inputs

    if kind == "gmn":
        return [normalize_inputs(n) for n in networks]
    if kind == "gmn_canon":
        return [canonicalize(n, sort=True) for n in networks]
    return list(networks)


def build_model(cfg: RunConfig, n_params: int) -> Any:
    """The torch module for `cfg.model`."""
    import torch

    torch.manual_seed(cfg.seed)
    if cfg.model == "mlp":
        h = cfg.mlp_hidden
        return torch.nn.Sequential(
            torch.nn.Linear(n_params, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(),
            torch.nn.Linear(h, cfg.gmn.d_out),
        )
    from scalegmn.torch import ScaleGMN

    gcfg = cfg.gmn
    if cfg.model in ("gmn", "gmn_canon"):
        gcfg = gcfg.model_copy(update={"symmetry": "permutation"})
    return ScaleGMN(gcfg)


def _batch(cfg: RunConfig, nets: Sequence[Network]) -> Any:
    import torch

    if cfg.model == "mlp":
        return torch.from_numpy(np.stack([n.flat() for n in nets]).astype(np.float32))
    from scalegmn.torch import collate

    return collate(nets, torch.float32)


def train_run(
    cfg: RunConfig,
    log_path: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train on the zoo's train split, select on val, report test at the best val epoch.

    Returns:
        A dict with `best_epoch`, `val_acc`, `test_acc`, `seconds`, and the per-epoch `history`.
    """
    import torch
    from rich.progress import Progress

    from .datasets import open_zoo

    splits = {s: open_zoo(cfg.zoo, s) for s in ("train", "val", "test")}
    data: dict[str, tuple[list[Network], np.ndarray]] = {}
    for s, ds in splits.items():
        n = len(ds) if s != "train" or cfg.max_train is None else min(len(ds), cfg.max_train)
        items = [ds[i] for i in range(n)]
        data[s] = (prepare_inputs(cfg.model, [a for a, _ in items]), np.array([int(t) for _, t in items]))
    spec = data["train"][0][0].spec
    if cfg.model != "mlp":
        cfg.gmn.check_compatible(spec)
    n_classes = int(max(int(y.max()) for _, y in data.values())) + 1
    if n_classes > cfg.gmn.d_out:
        raise ValueError(f"the zoo has {n_classes} classes but d_out={cfg.gmn.d_out}")
    model = build_model(cfg, data["train"][0][0].n_params())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1)))
    rng = np.random.default_rng(cfg.seed)
    pre = {s: [(_batch(cfg, nets[i:i + 256]), y[i:i + 256]) for i in range(0, len(nets), 256)]
           for s, (nets, y) in data.items() if s != "train"}

    def accuracy(split: str) -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in pre[split]:
                correct += int((model(xb).argmax(1).numpy() == yb).sum())
        return correct / max(1, sum(len(y) for _, y in pre[split]))

    nets, ys = data["train"]
    steps_per_epoch = math.ceil(len(nets) / cfg.batch_size)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_acc": -1.0}
    log = Path(log_path).open("a") if log_path else None
    t0 = time.perf_counter()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{cfg.model}", total=cfg.epochs * steps_per_epoch)
        for epoch in range(cfg.epochs):
            model.train()
            order = rng.permutation(len(nets))
            losses = []
            for k in range(steps_per_epoch):
                idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                xb = _batch(cfg, [nets[i] for i in idx])
                loss = torch.nn.functional.cross_entropy(model(xb), torch.from_numpy(ys[idx]))
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.advance(task)
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "val_acc": accuracy("val"),
                   "seconds": time.perf_counter() - t0}
            if row["val_acc"] > best["val_acc"]:
                best = {"val_acc": row["val_acc"], "test_acc": accuracy("test"), "best_epoch": epoch}
            history.append(row)
            if log:
                log.write(json.dumps({"model": cfg.model, **row}) + "\n")
                log.flush()
            if on_epoch:
                on_epoch(row)
    if log:
        log.close()
    return {**best, "seconds": time.perf_counter() - t0, "history": history,
            "n_train": len(nets), "n_params_model": sum(p.numel() for p in model.parameters())}
