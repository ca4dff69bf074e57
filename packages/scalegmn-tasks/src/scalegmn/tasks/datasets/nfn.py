"""NFN's CIFAR-10 INR data set: `randinit_smaller_{label}s/net{idx}.pth`, SIREN 2-32-32-3.

The split is by network index: train `idx < 45000 <= ` val `< 50000 <=` test. The augmented
variant adds, to the training split only, every copy in `randinit_smaller_aug{i}_{label}s`
(the same images, INRs fitted from other initialisations).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from scalegmn.weightgraph import NetworkSpec

from .base import ConcatDataset, DataError, NetworkDataset, OnError, check_split
from .pth import Entry, load_entries

NFN_CIFAR_SPEC = NetworkSpec.siren((2, 32, 32, 3), w0=30.0, output_offset=0.0)
"""The NFN CIFAR-10 INR architecture: SIREN 2-32-32-3, `w0 = 30`."""

_NET = re.compile(r"net(\d+)\.pth$")


def _entries(root: Path, prefix: str, lo: int, hi: float) -> list[Entry]:
    pattern = re.compile(re.escape(prefix) + r"_(\d)s$")
    by_idx: dict[int, Entry] = {}
    for d in sorted(root.iterdir()):
        m = pattern.match(d.name)
        if m is None or not d.is_dir():
            continue
        label = int(m.group(1))
        for f in d.iterdir():
            n = _NET.match(f.name)
            if n is None:
                continue
            idx = int(n.group(1))
            if idx in by_idx:
                raise DataError(
                    f"{f}: index {idx} appears twice ({by_idx[idx].path} too); the split is by index"
                )
            by_idx[idx] = Entry(f, label, f"{d.name}/{f.name}")
    return [by_idx[i] for i in sorted(by_idx) if lo <= i < hi]


def load_nfn_cifar_inrs(
    root: str | os.PathLike[str],
    split: str = "train",
    *,
    augmented: bool | int = False,
    split_points: tuple[int, int] = (45000, 50000),
    prefix: str = "randinit_smaller",
    spec: NetworkSpec = NFN_CIFAR_SPEC,
    key_format: str | None = None,
    on_error: OnError = "raise",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
) -> NetworkDataset:
    """A split of NFN's CIFAR-10 INRs (plain or augmented).

    Args:
        root: the folder holding `randinit_smaller_{label}s/` (and the `_aug{i}_` folders).
        split: `"train"`, `"val"`, `"test"` or `"all"`.
        augmented: add augmented copies to the training split: True for every
            `{prefix}_aug{i}` found, or the number of copies to use.
        split_points: `(val_start, test_start)` network indices.
        prefix: folder name prefix.
        spec: the SIREN architecture (override e.g. `output_offset` if your files need it).
        key_format: state dict key pattern; None (default) takes weights and biases in file
            order, as the original pipelines do.
        on_error: `"raise"` or `"skip"` bad files (counted in `ds.report`).
        cache_dir: keep a stacked copy here; later loads verify its checksum and read it.
        progress: show a progress bar.

    Returns:
        A dataset with integer labels (the class in the folder name).

    Raises:
        DataError: for a missing folder, duplicate indices, or bad files.
    """
    check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"NFN CIFAR INR folder {root} does not exist")
    val, test = split_points
    lo, hi = {"train": (0, val), "val": (val, test), "test": (test, float("inf")),
              "all": (0, float("inf"))}[split]
    entries = _entries(root, prefix, lo, hi)
    if not entries:
        raise DataError(f"{root}: no {prefix}_<label>s/net<idx>.pth files for split {split!r}")
    base = load_entries(entries, spec, f"nfn-cifar:{root.name}", split, on_error, cache_dir, progress,
                        key_format)
    if not augmented or split not in ("train", "all"):
        return base
    aug_re = re.compile(re.escape(prefix) + r"_aug(\d+)_\d+s$")
    found = sorted({int(m.group(1)) for d in root.iterdir() if (m := aug_re.match(d.name))})
    use = found if augmented is True else list(range(int(augmented)))
    missing = sorted(set(use) - set(found))
    if missing:
        raise DataError(f"{root}: augmented copies {missing} requested but no {prefix}_aug<i>_<label>s folders")
    parts: list[NetworkDataset] = [base]
    for i in use:
        ents = _entries(root, f"{prefix}_aug{i}", 0, val)
        parts.append(load_entries(ents, spec, f"nfn-cifar:{root.name}:aug{i}", "train", on_error,
                                  cache_dir, progress, key_format))
    return ConcatDataset(parts, name=f"nfn-cifar:{root.name}+aug", split=split)
