"""The `scalegmn` command line."""

from __future__ import annotations

import typer

from .zoo.cli import app as zoo_app

app = typer.Typer(help="Scale equivariant graph metanetworks.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")

if __name__ == "__main__":
    app()
