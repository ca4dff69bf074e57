"""The DWS MNIST and Fashion-MNIST INR data sets (one SIREN state dict per image).

MNIST: folders `mnist_png_{training,testing}_{label}_{idx}/checkpoints/model_final.pth`;
the label is in the folder name; 5,000 training INRs, drawn with a fixed seed, form the
validation split. Fashion-MNIST: a `splits.json` lists the files of each split and each
state dict stores its label under `label`. A split file in DWS's MNIST style
(`{"train": {"path": [...], "label": [...]}, ...}`) is read too.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from scalegmn.weightgraph import NetworkSpec

from .base import DataError, OnError, StackedDataset, check_split
from .pth import Entry, load_entries

DWS_SPEC = NetworkSpec.siren((2, 32, 32, 1), w0=30.0, output_offset=0.5)
"""The DWS INR architecture: SIREN 2-32-32-1, `w0 = 30`, output + 0.5."""

_MNIST_DIR = re.compile(r"mnist_png_(training|testing)_(\d+)_(\d+)$")


def _resolve(root: Path, listed: str, where: str) -> Path:
    p = Path(listed)
    parts = p.parts
    candidates = [p] if p.is_absolute() else [root / p]
    candidates += [root / Path(*parts[-k:]) for k in (3, 2) if len(parts) >= k]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(f"{where}: file {listed!r} not found under {root}")


def _entries_from_split_file(root: Path, split_file: Path, split: str) -> list[Entry]:
    try:
        table = json.loads(split_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{split_file}: cannot be read as JSON ({e})") from None
    if split not in table:
        raise DataError(f"{split_file}: has no split {split!r} (it has {', '.join(table)})")
    part = table[split]
    if isinstance(part, dict):
        paths, labels = part.get("path"), part.get("label")
        if not isinstance(paths, list) or (labels is not None and len(labels) != len(paths)):
            raise DataError(f"{split_file}: split {split!r} needs lists 'path' and 'label' of equal length")
    elif isinstance(part, list):
        paths, labels = part, None
    else:
        raise DataError(f"{split_file}: split {split!r} must be a list of paths or {{'path', 'label'}}")
    out = []
    for k, p in enumerate(paths):
        where = f"{split_file.name}, {split} row {k}"
        label = None if labels is None else int(labels[k])
        out.append(Entry(_resolve(root, p, where), label, where))
    return out


def _mnist_entries(root: Path, split: str, val_size: int, seed: int) -> list[Entry]:
    found: dict[str, list[tuple[int, Path]]] = {"training": [], "testing": []}
    labels: dict[Path, int] = {}
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        m = _MNIST_DIR.match(d.name)
        if m is None or not d.is_dir():
            continue
        f = d / "checkpoints" / "model_final.pth"
        if not f.is_file():
            pths = sorted(d.rglob("*.pth"))
            if len(pths) != 1:
                raise DataError(f"{d}: expected checkpoints/model_final.pth, found {len(pths)} .pth files")
            f = pths[0]
        found[m.group(1)].append((int(m.group(3)), f))
        labels[f] = int(m.group(2))
    if not found["training"] and not found["testing"]:
        raise DataError(
            f"{root}: no DWS INR folders (mnist_png_training_<label>_<idx>/checkpoints/model_final.pth) "
            "and no splits.json"
        )
    if split == "test":
        files = [f for _, f in sorted(found["testing"])]
    else:
        train = [f for _, f in sorted(found["training"])]
        if split == "all":
            files = train + [f for _, f in sorted(found["testing"])]
        else:
            if val_size >= len(train):
                raise DataError(f"{root}: val_size={val_size} but only {len(train)} training INRs")
            perm = np.random.default_rng(seed).permutation(len(train))
            chosen = np.sort(perm[:val_size]) if split == "val" else np.sort(perm[val_size:])
            files = [train[i] for i in chosen]
    return [Entry(f, labels[f], f.parent.parent.name) for f in files]


def load_dws_inrs(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    splits_file: str | os.PathLike[str] | None = None,
    val_size: int = 5000,
    seed: int = 0,
    on_error: OnError = "raise",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    key_format: str = "seq.{i}.{param}",
) -> StackedDataset:
    """A split of the DWS MNIST or Fashion-MNIST INRs.

    Args:
        root: the data folder (the MNIST `mnist_png_*` folders, or the F-MNIST files).
        split: `"train"`, `"val"`, `"test"` or `"all"`.
        splits_file: a split JSON (default: `root/splits.json` if it exists, else the
            MNIST folder names decide: `training` -> train/val, `testing` -> test).
        val_size: without a split file, how many training INRs form the validation split.
        seed: the seed that draws them.
        on_error: `"raise"` or `"skip"` bad files (counted in `ds.report`).
        cache_dir: keep a stacked copy here; later loads verify its checksum and read it.
        progress: show a progress bar.
        key_format: the state dict key pattern (DWS: `seq.{i}.{param}`).

    Returns:
        A `StackedDataset` of `DWS_SPEC` networks with integer labels; `ds.columns["row"]`
        is each network's row in the listing.

    Raises:
        DataError: for a missing folder, file, label, or a file that is not a DWS SIREN.
    """
    check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"DWS INR folder {root} does not exist")
    sf = Path(splits_file) if splits_file is not None else root / "splits.json"
    if splits_file is not None and not sf.is_file():
        raise DataError(f"split file {sf} does not exist")
    if sf.is_file():
        if split == "all":
            entries = [e for s in ("train", "val", "test") for e in _entries_from_split_file(root, sf, s)]
        else:
            entries = _entries_from_split_file(root, sf, split)
    else:
        entries = _mnist_entries(root, split, val_size, seed)
    return load_entries(entries, DWS_SPEC, f"dws:{root.name}", split, on_error, cache_dir, progress,
                        key_format)
