"""The `scalegmn` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .distributed import env_rank
from .zoo.cli import app as zoo_app

if TYPE_CHECKING:
    from .run.config import RunConfig

app = typer.Typer(help="Scale equivariant graph metanetworks.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
app.add_typer(__import__("scalegmn.tasks.presets.cli", fromlist=["app"]).app, name="presets")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the zoo, metrics, table and plot.")] = Path("scalegmn-demo"),
    quick: Annotated[bool, typer.Option(help="A small zoo and short training (under two minutes).")] = False,
    workers: Annotated[int, typer.Option(help="Processes for building the zoo.")] = 2,
) -> None:
    """Build a small MNIST INR zoo, train ScaleGMN-B, the GMN and an MLP, compare them on test."""
    from .demo import run_demo

    run_demo(out, quick=quick, workers=workers)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="A run config (JSON or YAML; see RunConfig).")],
    out: Annotated[Path | None, typer.Option(help="Run folder: config, metrics.jsonl, resumable state, best model, curves.png.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out where it stopped (same config).")] = False,
    log: Annotated[Path | None, typer.Option(help="Also append per-epoch metrics to this JSONL file.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    backend: Annotated[str | None, typer.Option(help="torch or jax (overrides the config's backend).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (overrides the config's device).")] = None,
) -> None:
    """Train one metanetwork on a zoo; report the test metric at the best validation epoch.

    With the torch backend it runs unchanged under `torchrun --nproc-per-node N` (data
    parallel); with `--backend jax` one process trains data parallel over the JAX devices.
    """
    from .train import TrainError, load_run_config, train_run
    from .zoo.store import ZooError

    if resume and out is None:
        typer.echo("error: --resume needs --out (the folder of the run to continue)", err=True)
        raise typer.Exit(2)
    try:
        cfg = load_run_config(config)
        if backend is not None:
            cfg = with_backend(cfg, backend)
        if device is not None:
            cfg = with_device(cfg, device)
        result = train_run(cfg, out=out, resume=resume, log_path=log, progress=not quiet)
    except (TrainError, ZooError) as err:  # a zoo read during training: a shard that went bad
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if env_rank() == 0:
        typer.echo(json.dumps({k: v for k, v in result.items() if k != "history"}))


def with_backend(cfg: RunConfig, backend: str) -> RunConfig:
    """`cfg` with its `backend` replaced (validated: `torch` or `jax`)."""
    from pydantic import ValidationError

    from .run.config import RunConfig, TrainError

    try:
        return RunConfig.model_validate({**cfg.model_dump(), "backend": backend})
    except ValidationError:
        raise TrainError(f"--backend {backend!r}: use torch or jax") from None


def with_device(cfg: RunConfig, device: str) -> RunConfig:
    """`cfg` with its `device` replaced (validated: `auto`, `cpu`, `cuda` or `cuda:N`)."""
    from pydantic import ValidationError

    from .run.config import RunConfig, TrainError

    try:
        return RunConfig.model_validate({**cfg.model_dump(), "device": device})
    except ValidationError:
        raise TrainError(f"--device {device!r}: use auto, cpu, cuda or cuda:N") from None


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `scalegmn train --out`.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
) -> None:
    """Evaluate the best model of a run on one split of its zoo."""
    from .train import TrainError, evaluate_run
    from .zoo.store import ZooError

    try:
        value, metric = evaluate_run(run, split)
    except (TrainError, ZooError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"run": str(run), "split": split, metric: value}))


@app.command()
def edit(
    zoo: Annotated[Path, typer.Argument(help="An INR zoo of grayscale SIRENs (scalegmn zoo build inr).")],
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the config's, else 10).")] = None,
    out: Annotated[Path, typer.Option(help="Run folder: run.json, metrics.jsonl, resumable state, best/, "
                                           "result.json, curves.png, editing.png.")] = Path("scalegmn-edit"),
    config: Annotated[Path | None, typer.Option(help="An EditConfig (JSON or YAML); the options override it.")] = None,
    d_hidden: Annotated[int | None, typer.Option(help="Hidden width of the ScaleGMN.")] = None,
    n_layers: Annotated[int | None, typer.Option(help="Message-passing layers of the ScaleGMN.")] = None,
    max_train: Annotated[int | None, typer.Option(help="Use only this many train INRs.")] = None,
    backend: Annotated[str | None, typer.Option(help="torch or jax (overrides the config's backend).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (overrides the config's device).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out where it stopped (same config).")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a ScaleGMN to edit SIRENs so their images are dilated (INR editing) and report test MSE.

    With the torch backend it runs unchanged under torchrun; with `--backend jax` one
    process trains data parallel over the JAX devices.
    """
    from pydantic import ValidationError

    from .editing import EditConfig, EditingError, load_edit_config, train_editing
    from .run.config import TrainError, validation_line
    from .zoo.store import ZooError

    try:
        cfg = load_edit_config(config) if config is not None else EditConfig()
        gmn = {k: v for k, v in {"d_hidden": d_hidden, "n_layers": n_layers}.items() if v is not None}
        update: dict[str, object] = {k: v for k, v in {"epochs": epochs, "max_train": max_train,
                                                        "backend": backend, "device": device}.items()
                                   if v is not None}
        if config is None and epochs is None:
            update["epochs"] = 10
        if gmn:
            update["gmn"] = cfg.gmn.model_copy(update=gmn).model_dump()
        cfg = EditConfig.model_validate({**cfg.model_dump(), **update})
    except ValidationError as err:
        typer.echo(f"error: invalid editing config: {validation_line(err)}", err=True)
        raise typer.Exit(2) from None
    except TrainError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    try:
        result = train_editing(zoo, cfg, progress=progress, out=out, resume=resume)
    except (EditingError, ZooError, TrainError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if env_rank() == 0:
        summary = {k: v for k, v in result.items() if k not in ("history", "model")}
        summary["config"] = cfg.model_dump(mode="json")
        typer.echo(json.dumps(summary))


if __name__ == "__main__":
    app()
