"""The `scalegmn` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .zoo.cli import app as zoo_app

app = typer.Typer(help="Scale equivariant graph metanetworks.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


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
    log: Annotated[Path | None, typer.Option(help="Append per-epoch metrics to this JSONL file.")] = None,
) -> None:
    """Train one metanetwork on a zoo (INR classification) and report test accuracy."""
    from pydantic import ValidationError

    from .train import RunConfig, train_run

    text = config.read_text()
    try:
        if config.suffix in (".yaml", ".yml"):
            import yaml

            cfg = RunConfig.model_validate(yaml.safe_load(text))
        else:
            cfg = RunConfig.model_validate_json(text)
    except (ValidationError, ValueError) as err:
        typer.echo(f"error: {config}: invalid run config:\n{err}", err=True)
        raise typer.Exit(2) from None
    result = train_run(cfg, log_path=log)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "history"}))


if __name__ == "__main__":
    app()
