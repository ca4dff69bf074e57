"""`scalegmn presets`: list the paper's presets as a table, or print one."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="The paper's experiments as presets (scalegmn presets; scalegmn presets show NAME).",
                  invoke_without_command=True)


@app.callback()
def presets(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per preset instead of the table.")] = False,
) -> None:
    """List the presets: task, data kind, model, the paper's number, parameters today vs the original."""
    if ctx.invoked_subcommand is not None:
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from . import list_presets, preset_summary

    rows = [preset_summary(n) for n in list_presets()]
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))
        return
    table = Table(title="The paper's experiments (scalegmn presets show NAME prints one)", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    # names and numbers never wrap (a narrow terminal wraps the words of task, data and model)
    for col, right, wrap in (("name", False, False), ("task", False, True), ("data", False, True),
                             ("model", False, True), ("paper", True, False), ("params", True, False),
                             ("original", True, False), ("ratio", True, False)):
        table.add_column(col, justify="right" if right else "left", no_wrap=not wrap,
                         overflow="fold" if wrap else "ellipsis")
    for r in rows:
        table.add_row(r["name"], r["task"], r["data"], r["model"], r["paper"], f"{r['parameters']:,}",
                      f"{r['original']:,}", f"{r['ratio']:.2f}")
    console = Console()
    console.print(table)
    console.print("params: today's model; original: the original implementation's; ratio: params / original "
                  "(each preset's proposed: options close the gap once they exist)")


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="A preset name (scalegmn presets lists them).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE override, e.g. epochs=1 (repeatable).")] = None,
    resolved: Annotated[bool, typer.Option(help="Print the validated run config with every default filled in.")] = False,
) -> None:
    """Print one preset as YAML: its file (comments included), or with --set/--resolved the run config."""
    import yaml

    from . import PresetError, get_preset, preset_text

    try:
        if not set_ and not resolved:
            typer.echo(preset_text(name), nl=False)
            return
        cfg = get_preset(name, set_ or ())
    except PresetError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), nl=False)
