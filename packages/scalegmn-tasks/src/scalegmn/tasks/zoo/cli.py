"""`scalegmn zoo ...`: build INR and CNN zoos, and describe a zoo."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ..distributed import env_rank
from ..sources import SourceError
from .manifest import SPLITS
from .store import Zoo, ZooError, read_manifest

app = typer.Typer(help="Build model zoos and describe them.", no_args_is_help=True)
build_app = typer.Typer(help="Build a zoo (resumable: pass --resume after an interruption; "
                        "runs unchanged under torchrun to share the work between processes).",
                        no_args_is_help=True)
app.add_typer(build_app, name="build")
console = Console()


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}")
    raise typer.Exit(code=2)


def _auto_compile(flag: bool | None) -> bool:
    return flag if flag is not None else shutil.which("cc") is not None or shutil.which("gcc") is not None


@build_app.command("inr")
def build_inr(
    out: Annotated[Path, typer.Argument(help="Output folder (new, or an interrupted build with --resume).")],
    source: Annotated[str, typer.Option(help="mnist5k, fashion-mnist, digits, or a .npz/.npy file of images.")] = "mnist5k",
    recipe: Annotated[str | None, typer.Option(help="Fitting recipe: dws (the published MNIST/Fashion-MNIST INRs) or siren; default dws for mnist5k and fashion-mnist, siren otherwise.")] = None,
    count: Annotated[int | None, typer.Option(help="Number of INRs (default: one per image).")] = None,
    steps: Annotated[int | None, typer.Option(help="At most this many Adam steps per INR (default: the recipe's; dws 1000, siren 500).")] = None,
    workers: Annotated[int, typer.Option(help="Processes (one thread each).")] = 2,
    seed: Annotated[int, typer.Option(help="Selects images, splits and initialisations.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted build of the same zoo.")] = False,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (default: the recipe's; dws 5e-4, siren 1e-3).")] = None,
    psnr_stop: Annotated[float | None, typer.Option(help="Stop an INR at the first step it reaches this PSNR in dB (default: the recipe's; dws 40, siren none).")] = None,
    widths: Annotated[str, typer.Option(help="SIREN widths, comma separated.")] = "2,32,32,1",
    w0: Annotated[float, typer.Option(help="Sine frequency.")] = 30.0,
    output_offset: Annotated[float, typer.Option(help="Added to the output (DWS: 0.5).")] = 0.5,
    batch_size: Annotated[int | None, typer.Option(
        help="INRs fitted together per process (default: 8 with --compile, else 32).")] = None,
    shard_size: Annotated[int, typer.Option(help="INRs per shard file (unit of resume).")] = 256,
    val_fraction: Annotated[float, typer.Option(help="Fraction in the val split.")] = 0.1,
    test_fraction: Annotated[float, typer.Option(help="Fraction in the test split (unless the source has an official test set).")] = 0.1,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the fitting step (default: if a C compiler exists).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Fit one SIREN per image of a source."""
    from .inr import RECIPES, build_inr_zoo

    if recipe is not None and recipe not in RECIPES:
        _fail(ValueError(f"--recipe {recipe!r} is not a recipe; use one of {', '.join(RECIPES)}"))
    try:
        _manifest, stats = build_inr_zoo(
            out, source, workers=workers, resume=resume, progress=not quiet, count=count, recipe=recipe,
            steps=steps, seed=seed, lr=lr, psnr_stop=psnr_stop, widths=_ints(widths), w0=w0, output_offset=output_offset,
            batch_size=batch_size, shard_size=shard_size, val_fraction=val_fraction,
            test_fraction=test_fraction, compile=_auto_compile(compile),
        )
    except (ZooError, SourceError, ValueError) as e:
        _fail(e)
    if env_rank() != 0:
        return  # under torchrun, rank 0 reports for every process
    console.print(
        f"built {stats.networks_built} INRs in {stats.seconds:.1f} s "
        f"({stats.networks_per_second:.1f} INRs/s; {stats.shards_skipped} shards from an earlier run) -> {out}"
    )
    _describe(Zoo(out))


@build_app.command("cnn")
def build_cnn(
    out: Annotated[Path, typer.Argument(help="Output folder (new, or an interrupted build with --resume).")],
    source: Annotated[str, typer.Option(help="mnist5k, fashion-mnist, digits, or a .npz/.npy file of images.")] = "mnist5k",
    count: Annotated[int, typer.Option(help="Training runs (networks = runs x checkpoints).")] = 100,
    workers: Annotated[int, typer.Option(help="Processes (one thread each).")] = 2,
    seed: Annotated[int, typer.Option(help="Draws every hyperparameter and split.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted build of the same zoo.")] = False,
    channels: Annotated[int, typer.Option(help="Channels of every conv layer.")] = 16,
    n_conv: Annotated[int, typer.Option(help="Conv layers.")] = 3,
    image_size: Annotated[int | None, typer.Option(help="Zero-pad images to this size.")] = None,
    activations: Annotated[str, typer.Option(help="Comma separated, drawn per run.")] = "relu,tanh",
    epochs: Annotated[str, typer.Option(help="Epoch counts drawn per run, comma separated.")] = "1,2,4,8",
    checkpoints: Annotated[str, typer.Option(help="Fractions of training at which to save.")] = "0.1,0.3,1.0",
    test_size: Annotated[int, typer.Option(help="Test images for the accuracy.")] = 1000,
    shard_size: Annotated[int, typer.Option(help="Runs per shard file.")] = 32,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train small CNNs with random hyperparameters, several checkpoints each."""
    from .cnn import build_cnn_zoo

    try:
        _manifest, stats = build_cnn_zoo(
            out, source, workers=workers, resume=resume, progress=not quiet, count=count,
            seed=seed, channels=channels, n_conv=n_conv, image_size=image_size,
            activations=tuple(a.strip() for a in activations.split(",") if a.strip()),
            epochs=_ints(epochs), checkpoints=_floats(checkpoints), test_size=test_size,
            shard_size=shard_size,
        )
    except (ZooError, SourceError, ValueError) as e:
        _fail(e)
    if env_rank() != 0:
        return  # under torchrun, rank 0 reports for every process
    console.print(
        f"built {stats.networks_built} CNN checkpoints in {stats.seconds:.1f} s "
        f"({stats.networks_per_second:.1f} networks/s) -> {out}"
    )
    _describe(Zoo(out))


@app.command("info")
def info(
    path: Annotated[Path, typer.Argument(help="A zoo folder.")],
    verify: Annotated[bool, typer.Option(help="Read every shard and check its checksum, metadata and values.")] = False,
) -> None:
    """Counts, splits, target histogram and metadata of a zoo (exit code 2 for a bad zoo)."""
    try:
        manifest = read_manifest(path)
        if not manifest.complete:
            console.print(
                f"[yellow]incomplete zoo[/yellow]: {len(manifest.shards)} of {manifest.n_shards} "
                "shards written; finish it with the same build command and --resume"
            )
            raise typer.Exit(code=1)
        zoo = Zoo(path)
    except ZooError as e:
        _fail(e)
    _describe(zoo)
    if verify:
        _verify(zoo)


def _verify(zoo: Zoo) -> None:
    """Check every shard; one line per bad shard, exit code 2 if there is any."""
    from rich.progress import Progress

    n = zoo.manifest.n_shards
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("verifying shards", total=n)
        problems = zoo.verify_shards(progress=lambda _k: bar.advance(task))
    for p in problems:
        console.print(f"[red]error:[/red] {p}", soft_wrap=True)
    if problems:
        raise typer.Exit(code=2)
    console.print(f"verified {n} shards: checksums, metadata and values match the manifest")


def _describe(zoo: Zoo) -> None:
    m = zoo.manifest
    size = sum(s.nbytes for s in m.shards)
    t = Table(title=f"zoo {zoo.root}", show_header=False)
    t.add_row("kind", m.kind)
    t.add_row("networks", f"{m.n_networks} in {m.n_shards} shards ({size / 1e6:.1f} MB)")
    t.add_row("source", f"{m.source.get('name', '?')} ({m.source.get('n_images', '?')} images)")
    for k, spec in enumerate(m.specs):
        widths = "-".join(str(w) for w in spec.widths)
        acts = ",".join(sorted(set(spec.activations) - {"identity"})) or "identity"
        n = sum(s.count for s in m.shards if s.spec == k)
        t.add_row(f"architecture {k}", f"{widths} ({acts}), {n} networks")
    t.add_row("target", f"{m.target.name} ({m.target.kind})")
    t.add_row("splits", ", ".join(f"{k} {v}" for k, v in m.split_counts.items()))
    t.add_row("seed", str(m.seed))
    if m.recipe:
        r = m.recipe
        stop = f", stop at {r['psnr_stop']} dB" if r.get("psnr_stop") is not None else ""
        t.add_row("recipe", f"{r.get('name')} (lr {r.get('lr')}, at most {r.get('steps')} steps{stop})")
    if m.history:
        secs = sum(h.get("seconds", 0) for h in m.history)
        t.add_row("build time", f"{secs:.1f} s over {len(m.history)} run(s)")
    console.print(t)

    h = Table(title=f"target histogram: {m.target.name}")
    h.add_column("class" if m.target.kind == "class" else "bin")
    for s in SPLITS:
        h.add_column(s, justify="right")
    edges = 10 if m.target.kind == "class" else np.histogram_bin_edges(zoo.targets.astype(np.float64), 10)
    hists = [zoo.target_histogram(s, bins=edges) for s in SPLITS]
    keys = hists[0][0]
    names = m.target.class_names
    for i in range(len(hists[0][1])):
        if m.target.kind == "class":
            label = str(keys[i])
            if i < len(names) and names[i] != label:
                label += f" {names[i]}"
        else:
            label = f"[{keys[i]:.3f}, {keys[i + 1]:.3f})"
        h.add_row(label, *(str(int(c[1][i])) for c in hists))
    console.print(h)

    c = Table(title="per-network columns")
    for col in ("column", "min", "median", "max"):
        c.add_column(col, justify="right" if col != "column" else "left")
    for name in m.columns:
        if name in ("id", "split", "group"):
            continue
        v = zoo.columns[name].astype(np.float64)
        if name in m.categories:
            cats = m.categories[name]
            c.add_row(name, ", ".join(f"{cats[k]}: {int(np.sum(v == k))}" for k in range(len(cats))), "", "")
            continue
        v = v[np.isfinite(v)]
        if v.size:
            c.add_row(name, f"{v.min():.4g}", f"{np.median(v):.4g}", f"{v.max():.4g}")
    console.print(c)
