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
    jobs: Annotated[int, typer.Option(help="Training runs side by side: 2 (one thread each) or 1.")] = 2,
) -> None:
    """Build a small MNIST INR zoo, train ScaleGMN-B, the GMN and an MLP, compare them on test."""
    from .demo import run_demo

    if jobs not in (1, 2):
        raise _fail(ValueError(f"--jobs {jobs}: use 1 (one run after the other) or 2 (two side by side)"))
    run_demo(out, quick=quick, workers=workers, jobs=jobs)


_PRESET = "A preset (scalegmn presets lists them): the paper's settings for one experiment."
_DATA = "The data folder; its kind is the preset's or the config's, else recognised from its contents."
_SET = "KEY=VALUE override, e.g. epochs=1 or gmn.d_hidden=8 (repeatable; applied last)."


def _fail(err: Exception) -> typer.Exit:
    """Print one error line and give the exit (status 2) to raise."""
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(2)


def _errors() -> tuple[type[Exception], ...]:
    """The error classes that a run reports as one line (imported when a command runs)."""
    from .data import DataSourceError
    from .datasets.base import DataError
    from .presets import PresetError
    from .run.config import TrainError
    from .sirens import EditingError
    from .zoo.store import ZooError

    return TrainError, ZooError, PresetError, DataSourceError, DataError, EditingError


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="A run config (JSON or YAML; see RunConfig).")] = None,
    preset: Annotated[str | None, typer.Option(help=_PRESET)] = None,
    data: Annotated[Path | None, typer.Option(help=_DATA)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=_SET)] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder: config, metrics.jsonl, resumable state, best model, curves.png.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out where it stopped (same config).")] = False,
    log: Annotated[Path | None, typer.Option(help="Also append per-epoch metrics to this JSONL file.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    backend: Annotated[str | None, typer.Option(help="torch or jax (overrides the config's backend).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (overrides the config's device).")] = None,
) -> None:
    """Train one metanetwork on a zoo or a published data set; report the test metric at the best validation epoch.

    The config is built from, lowest precedence first: `--preset`, the CONFIG file,
    `--data`, `--set`, then `--device` and `--backend`. With the torch backend it runs
    unchanged under `torchrun --nproc-per-node N` (data parallel); with `--backend jax` one
    process trains data parallel over the JAX devices.
    """
    from .resolve import resolve_config
    from .train import train_run

    if resume and out is None:
        typer.echo("error: --resume needs --out (the folder of the run to continue)", err=True)
        raise typer.Exit(2)
    if config is None and preset is None and data is None:
        typer.echo("error: give a CONFIG file, --preset NAME or --data PATH (scalegmn train --help)", err=True)
        raise typer.Exit(2)
    try:
        cfg = resolve_config("train", config, preset=preset, data=data, sets=set_ or (), device=device,
                             backend=backend)
        result = train_run(cfg, out=out, resume=resume, log_path=log, progress=not quiet)  # type: ignore[arg-type]
    except _errors() as err:  # also a zoo or file read during training: a shard that went bad
        raise _fail(err) from None
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
    """Evaluate the best model of a run on one split of its data (a zoo or a published data set)."""
    from .train import evaluate_run

    try:
        value, metric = evaluate_run(run, split)
    except _errors() as err:
        raise _fail(err) from None
    typer.echo(json.dumps({"run": str(run), "split": split, metric: value}))


@app.command()
def edit(
    source: Annotated[Path | None, typer.Argument(
        help="An EditConfig file (JSON or YAML), or a data folder: an INR zoo of grayscale SIRENs "
             "(scalegmn zoo build inr) or the DWS MNIST INRs.")] = None,
    preset: Annotated[str | None, typer.Option(help=_PRESET)] = None,
    data: Annotated[Path | None, typer.Option(help=_DATA)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=_SET + " images=FOLDER: the MNIST idx files.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (as --set epochs=N).")] = None,
    out: Annotated[Path, typer.Option(help="Run folder: run.json, metrics.jsonl, resumable state, best/, "
                                           "result.json, curves.png, editing.png.")] = Path("scalegmn-edit"),
    config: Annotated[Path | None, typer.Option(help="An EditConfig (JSON or YAML), when SOURCE is the data folder.")] = None,
    d_hidden: Annotated[int | None, typer.Option(help="Hidden width of the ScaleGMN (as --set gmn.d_hidden=N).")] = None,
    n_layers: Annotated[int | None, typer.Option(help="Message-passing layers (as --set gmn.n_layers=N).")] = None,
    max_train: Annotated[int | None, typer.Option(help="Use only this many train INRs (as --set max_train=N).")] = None,
    backend: Annotated[str | None, typer.Option(help="torch or jax (overrides the config's backend).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N (overrides the config's device).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out where it stopped (same config).")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a ScaleGMN to edit SIRENs so their images are dilated (INR editing) and report test MSE.

    `scalegmn edit [CONFIG] [--preset NAME] [--data PATH] [--set KEY=VALUE ...]`, with the
    precedence of `scalegmn train`; `scalegmn edit ZOO [--config FILE]` still works. On the
    DWS MNIST INRs the targets are the dilated MNIST images given by `--set images=FOLDER`
    (the idx files); without them the render of each INR is dilated (`target: auto`). With
    the torch backend it runs unchanged under torchrun; with `--backend jax` one process
    trains data parallel over the JAX devices.
    """
    from .editing import train_editing
    from .resolve import resolve_config

    if source is not None and source.is_dir():
        if data is not None:
            typer.echo(f"error: give the data once: {source} or --data {data}, not both", err=True)
            raise typer.Exit(2)
        data = source
    elif source is not None:
        if config is not None:
            typer.echo(f"error: give the config once: {source} or --config {config}, not both", err=True)
            raise typer.Exit(2)
        config = source
    legacy = [f"{k}={v}" for k, v in (("epochs", epochs), ("gmn.d_hidden", d_hidden), ("gmn.n_layers", n_layers),
                                      ("max_train", max_train)) if v is not None]
    try:
        cfg = resolve_config("edit", config, preset=preset, data=data, sets=[*legacy, *(set_ or ())],
                             device=device, backend=backend)
        result = train_editing(None, cfg, progress=progress, out=out, resume=resume)  # type: ignore[arg-type]
    except _errors() as err:
        raise _fail(err) from None
    if env_rank() == 0:
        summary = {k: v for k, v in result.items() if k not in ("history", "model")}
        summary["config"] = cfg.model_dump(mode="json")
        typer.echo(json.dumps(summary))


if __name__ == "__main__":
    app()
