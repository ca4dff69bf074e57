"""The torch adapter: ScaleGMN from `scalegmn.torch` or an MLP, AdamW + `LambdaLR` warm-up,
data parallel under torchrun (`DistributedDataParallel`, gloo on CPU, NCCL on GPU).

Every global batch is split across the processes (`idx[rank::world]`) and the summed loss is
scaled by `world / batch` so that the gradient DDP averages is the single-process mean's.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scalegmn.weightgraph import Network
from scalegmn.weightgraph.io import atomic_write

from ...distributed import barrier, init_distributed
from ..config import NonFiniteError, TrainError, lr_factor
from ..tasks import Task
from .base import Backend, ModelSetup

MLP_FILE = "model.safetensors"
EVAL_BATCH = 256


@dataclass(frozen=True)
class TorchFamily:
    """How one model family is built, batched and saved in torch."""

    build: Callable[[ModelSetup, int], torch.nn.Module]
    batch: Callable[[Sequence[Network]], Any]
    save_best: Callable[[torch.nn.Module, Path], None]
    load_best: Callable[[ModelSetup, int, Path], torch.nn.Module]


def _build_scalegmn(setup: ModelSetup, n_params: int) -> torch.nn.Module:
    from scalegmn.torch import ScaleGMN

    return ScaleGMN(setup.gmn)


def _graph_batch(nets: Sequence[Network]) -> Any:
    from scalegmn.torch import collate

    return collate(nets, torch.float32)


def _save_scalegmn(model: torch.nn.Module, path: Path) -> None:
    from scalegmn.torch import ScaleGMN, save_checkpoint

    assert isinstance(model, ScaleGMN)
    save_checkpoint(model, path)


def _load_scalegmn(setup: ModelSetup, n_params: int, path: Path) -> torch.nn.Module:
    from scalegmn.torch import load_checkpoint

    return load_checkpoint(path)


def _build_mlp(setup: ModelSetup, n_params: int) -> torch.nn.Module:
    h = setup.mlp_hidden
    return torch.nn.Sequential(
        torch.nn.Linear(n_params, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU(),
        torch.nn.Linear(h, setup.gmn.d_out),
    )


def _flat_batch(nets: Sequence[Network]) -> Any:
    return torch.from_numpy(np.stack([n.flat() for n in nets]).astype(np.float32))


def _save_mlp(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save

    blob = save({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    atomic_write(path / MLP_FILE, blob)


def _load_mlp(setup: ModelSetup, n_params: int, path: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    model = _build_mlp(setup, n_params)
    model.load_state_dict(load_file(str(path / MLP_FILE)))
    return model


FAMILIES: dict[str, TorchFamily] = {
    "graph": TorchFamily(_build_scalegmn, _graph_batch, _save_scalegmn, _load_scalegmn),
    "weights": TorchFamily(_build_mlp, _flat_batch, _save_mlp, _load_mlp),
}


def build_model(setup: ModelSetup, n_params: int) -> torch.nn.Module:
    """The torch module of the run's kind, initialised from `torch.manual_seed(seed)`."""
    torch.manual_seed(setup.loop.seed)
    return FAMILIES[setup.kind.family].build(setup, n_params)


def _global_sum(x: torch.Tensor, world: int) -> float:
    if world > 1:
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
    return float(x)


def resolve_device(device: str) -> torch.device:
    """The torch device of a `LoopConfig.device` value.

    Raises:
        TrainError: a GPU is asked for and torch sees none, or not that many.
    """
    import os

    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainError(f"device={device!r} but torch sees no GPU (torch.cuda.is_available() is False); "
                         f"use device='cpu' or 'auto'")
    index = int(device.split(":")[1]) if ":" in device else int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise TrainError(f"device={device!r} but torch sees {torch.cuda.device_count()} GPU(s); "
                         f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


class TorchBackend(Backend):
    """The torch adapter (see the module docstring and `Backend`)."""

    name = "torch"

    @staticmethod
    def check_device(device: str) -> None:
        """`resolve_device` (the refusal of a missing GPU)."""
        resolve_device(device)

    @staticmethod
    def processes(threads: int | None) -> tuple[int, int]:
        """`init_distributed()` (a process group under torchrun) and torch's thread count."""
        rank, world = init_distributed()
        if threads is not None:
            torch.set_num_threads(threads)
        return rank, world

    @staticmethod
    def barrier(world: int) -> None:
        """`torch.distributed.barrier` when there are several processes."""
        barrier(world)

    def __init__(self, setup: ModelSetup, task: Task, n_params: int, rank: int, world: int,
                 total_steps: int = 0) -> None:
        self.setup, self.task, self.n_params, self.rank, self.world = setup, task, n_params, rank, world
        self.family = FAMILIES[setup.kind.family]
        self.device = resolve_device(setup.loop.device)
        self._model = build_model(setup, n_params).to(self.device)
        self.net = self._model
        if world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self._model, device_ids=ids)
        loop = setup.loop
        self.opt = torch.optim.AdamW(self._model.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
        if loop.lr_schedule == "cosine" and total_steps < 1:
            raise TrainError(f"lr_schedule='cosine' needs the run's total_steps (>= 1); got {total_steps}")
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, functools.partial(lr_factor, warmup_steps=loop.warmup_steps, total_steps=total_steps,
                                        schedule=loop.lr_schedule))
        self.target_dtype = getattr(torch, task.torch_target_dtype)
        self._eval: dict[str, list[tuple[Any, np.ndarray]]] = {}
        self._best: dict[str, torch.Tensor] | None = None

    @property
    def model(self) -> torch.nn.Module:
        """The torch module (not the DDP wrapper)."""
        return self._model

    def _autocast(self) -> torch.autocast:
        """bfloat16 autocast on the run's device when `precision` is `"bf16"` (else a no-op)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.setup.loop.precision == "bf16")

    def _targets(self, y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(y)).to(self.device, self.target_dtype)

    def _batch(self, nets: Sequence[Network]) -> Any:
        return self.family.batch(nets).to(self.device)

    def train_mode(self) -> None:
        """`model.train()`."""
        self._model.train()

    def train_step(self, nets: Sequence[Network], targets: np.ndarray, step: int) -> float:
        """This process's share of the batch, DDP's averaged gradient, clipping, AdamW, schedule."""
        local = np.arange(len(nets))[self.rank::self.world]
        # DDP averages gradients over processes: scale so the average is d(mean loss).
        scale = self.world / len(nets)
        with self._autocast():
            out = self.net(self._batch([nets[i] for i in local]))
            loss = self.task.torch_loss_sum(out, self._targets(targets[local])) * scale
        self.opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self._model.parameters(), self.setup.loop.grad_clip)
        loss = loss.detach()
        if not torch.isfinite(loss):
            raise NonFiniteError(f"the loss is {loss.item()}")
        if not torch.isfinite(norm):
            raise NonFiniteError(f"the gradient norm is {float(norm)}")
        self.opt.step()
        self.sched.step()
        return _global_sum(loss, self.world) / self.world

    def evaluate(self, split: str, nets: Sequence[Network], targets: np.ndarray) -> float:
        """The task's metric over the split (its batches built once)."""
        if split not in self._eval:
            self._eval[split] = [(self._batch(nets[i:i + EVAL_BATCH]), targets[i:i + EVAL_BATCH])
                                 for i in range(0, len(nets), EVAL_BATCH)]
        self._model.eval()
        values = []
        with torch.no_grad(), self._autocast():
            for xb, y in self._eval[split]:
                values.append(self.task.torch_values(_float32(self._model(xb)), self._targets(y)))
        return self.task.score(np.concatenate(values), np.concatenate([y for _, y in self._eval[split]]))

    def finite(self) -> bool:
        """Whether every parameter is finite."""
        return all(bool(torch.isfinite(p).all()) for p in self._model.parameters())

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Model, AdamW moments, schedule and torch's random state."""
        tensors = {f"model.{k}": v.detach().cpu().numpy() for k, v in self._model.state_dict().items()}
        osd = self.opt.state_dict()
        for idx, st in osd["state"].items():
            for k, v in st.items():
                t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
                tensors[f"optim.{idx}.{k}"] = t.detach().cpu().numpy()
        tensors["rng.torch"] = torch.get_rng_state().numpy()
        info = {"backend": self.name, "param_groups": osd["param_groups"], "sched": self.sched.state_dict()}
        return tensors, info

    def load_state(self, tensors: dict[str, np.ndarray], info: dict[str, Any], path: Path) -> None:
        """Restore `state()`'s content."""
        if info.get("backend", "torch") != self.name:
            raise TrainError(f"{path} is the state of a {info.get('backend')} run, not a torch run")
        t = {k: torch.from_numpy(np.array(v)).to(self.device) if k != "rng.torch" else torch.from_numpy(np.array(v))
             for k, v in tensors.items()}
        try:
            self._model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
            state: dict[int, dict[str, Any]] = {}
            for k, v in t.items():
                if k.startswith("optim."):
                    _, idx, name = k.split(".", 2)
                    state.setdefault(int(idx), {})[name] = v
            self.opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
            self.sched.load_state_dict(info["sched"])
            torch.set_rng_state(t["rng.torch"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise TrainError(f"{path}: the state does not fit this run's model ({str(err)[:200]}); "
                             f"start a new run in another --out") from None

    def save_best(self, path: Path) -> None:
        """`scalegmn.torch.save_checkpoint` (ScaleGMN) or `model.safetensors` (MLP)."""
        path.mkdir(parents=True, exist_ok=True)
        self.family.save_best(self._model, path)

    def load_best(self, path: Path) -> None:
        """Load a model `save_best` wrote."""
        self._model = self.family.load_best(self.setup, self.n_params, path).to(self.device)

    def keep_best(self, path: Path | None = None) -> None:
        """A copy of the state dict (of the model in `path` if given)."""
        model = self._model if path is None else self.family.load_best(self.setup, self.n_params, path)
        self._best = copy.deepcopy(model.state_dict())

    def restore_best(self) -> None:
        """Load the copy back."""
        if self._best is not None:
            self._model.load_state_dict(self._best)

    def n_params_model(self) -> int:
        """Parameters of the model."""
        return sum(p.numel() for p in self._model.parameters())

    def edited_networks(self, nets: Sequence[Network]) -> list[Network]:
        """Decode the equivariant head's output graphs."""
        self._model.eval()
        with torch.no_grad():
            out = self._model(self._batch(nets))
        return list(out.to_networks())


def _float32(out: Any) -> Any:
    """Model outputs back in float32 after autocast (a tensor; graphs are left as they are)."""
    return out.float() if isinstance(out, torch.Tensor) else out


def score(model: Any, batches: Sequence[tuple[Any, np.ndarray]], classify: bool) -> float:
    """Accuracy (classification) or Kendall's tau of `sigmoid(f(G))` (regression) over batches."""
    from ..tasks import kendall_tau

    model.eval()
    preds = []
    with torch.no_grad():
        for xb, _ in batches:
            p = model(xb)
            preds.append(p.argmax(1).numpy() if classify else torch.sigmoid(p[:, 0]).numpy())
    pr, yy = np.concatenate(preds), np.concatenate([y for _, y in batches])
    return float((pr == yy).mean()) if classify else kendall_tau(pr, yy)


__all__ = ["FAMILIES", "TorchBackend", "build_model", "score"]
