"""Loading many `.pth` state dicts (one network each) into one stacked dataset, with a cache.

Each file is opened with `torch.load(..., weights_only=True)` (no pickled code runs) and
converted with `scalegmn.weightgraph.from_state_dict`. Reading tens of thousands of small
files is slow, so the stacked result can be cached in one safetensors file keyed by the
file list, sizes and modification times. The cache records a SHA-256 of its arrays and
report in its metadata; a later load verifies it and rebuilds (with a warning naming the
file) a cache that fails the check, so a damaged or edited cache is never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph import Network, NetworkSpec
from scalegmn.weightgraph.io import atomic_write

from ..zoo.store import ZooError, read_safetensors, safetensors_bytes
from .base import DataError, LoadReport, OnError, StackedDataset, check_on_error


@dataclass(frozen=True)
class Entry:
    """One network file to load.

    Attributes:
        path: the `.pth` file.
        label: the label known from its folder name or a split file (None: read it from the
            state dict's `label` entry).
        where: how to name it in errors (e.g. `"splits.json, test row 12"`).
    """

    path: Path
    label: int | None
    where: str


def load_state_dict(path: Path) -> dict[str, Any]:
    """`torch.load(path, weights_only=True)` as a dict of numpy arrays and Python scalars.

    Raises:
        DataError: if the file is missing, unreadable, or not a dict of tensors.
    """
    import torch

    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notices for files we refuse anyway
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise DataError(f"{path}: cannot be read as a PyTorch file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out[k] = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
    return out


def _label_of(sd: dict[str, Any], entry: Entry) -> int:
    stored = sd.pop("label", None)
    if stored is not None:
        stored = int(np.asarray(stored).reshape(-1)[0])
    if entry.label is not None and stored is not None and stored != entry.label:
        raise DataError(
            f"{entry.path} ({entry.where}): the state dict says label {stored} but its "
            f"listing says {entry.label}"
        )
    label = entry.label if entry.label is not None else stored
    if label is None:
        raise DataError(f"{entry.path} ({entry.where}): no label (no 'label' entry and none in its name)")
    return int(label)


def in_order(sd: dict[str, Any]) -> dict[str, Any]:
    """Rename a state dict's parameters to `seq.{i}.{param}` by their order in the file.

    The i-th key containing `weight` and the i-th containing `bias` become layer i (how the
    original pipelines read NFN's files); other keys are dropped.
    """
    ws = [k for k in sd if "weight" in k]
    bs = [k for k in sd if "bias" in k]
    out = {f"seq.{i}.weight": sd[k] for i, k in enumerate(ws)}
    out.update({f"seq.{i}.bias": sd[k] for i, k in enumerate(bs)})
    return out


def convert(sd: dict[str, Any], spec: NetworkSpec, entry: Entry, key_format: str | None = "seq.{i}.{param}") -> Network:
    """A state dict as a `Network` of `spec` (via `scalegmn.weightgraph.from_state_dict`).

    Args:
        sd: the state dict (numpy arrays).
        spec: the architecture.
        entry: the file, for error messages.
        key_format: the keys' pattern (`{i}` layer, `{param}` weight/bias), or None to take
            the weights and biases in file order (`in_order`).

    Raises:
        DataError: naming the file if keys, shapes or values do not fit (NaN included).
    """
    from scalegmn.weightgraph import from_state_dict

    try:
        if key_format is None:
            return from_state_dict(in_order(sd), spec)
        return from_state_dict(sd, spec, key_format=key_format)
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{entry.path} ({entry.where}): {e}") from None


def _cache_key(entries: list[Entry], spec: NetworkSpec, extra: str) -> str:
    h = hashlib.sha256()
    h.update(spec.signature().encode())
    h.update(extra.encode())
    for e in entries:
        try:
            st = e.path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{e.path}|{e.label}|{stamp}\n".encode())
    return h.hexdigest()[:24]


def load_entries(
    entries: list[Entry], spec: NetworkSpec, name: str, split: str, on_error: OnError = "raise",
    cache_dir: str | os.PathLike[str] | None = None, progress: bool | None = None,
    key_format: str | None = "seq.{i}.{param}",
) -> StackedDataset:
    """Load every entry into a `StackedDataset` (float32), or read a verified cached copy.

    Args:
        entries: the files, in dataset order.
        spec: the architecture every file must have.
        name: recorded on the dataset.
        split: recorded on the dataset.
        on_error: `"raise"` (default) or `"skip"` (count in `ds.report`).
        cache_dir: where to keep a stacked copy (None: no cache).
        progress: show a progress bar (default: for more than 2,000 files).
        key_format: state dict key pattern, or None for file order (see `convert`).

    Raises:
        DataError: for a bad file when `on_error="raise"`, or if nothing is left.
    """
    check_on_error(on_error)
    cache_path = None
    if cache_dir is not None:
        key = _cache_key(entries, spec, f"{on_error}|{key_format}")
        cache_path = Path(cache_dir) / f"{name.replace('/', '_')}-{split}-{key}.safetensors"
        if cache_path.is_file():
            cached = _from_cache(cache_path, spec, name, split)
            if cached is not None:
                return cached
    report = LoadReport()
    nets: list[Network] = []
    labels: list[int] = []
    rows: list[int] = []
    show = progress if progress is not None else len(entries) > 2000
    from rich.progress import track

    for k, entry in enumerate(track(entries, description=f"loading {name} {split}", disable=not show)):
        try:
            sd = load_state_dict(entry.path)
            label = _label_of(sd, entry)
            net = convert(sd, spec, entry, key_format)
        except DataError as e:
            if on_error == "raise":
                raise
            report.add(str(e))
            continue
        nets.append(net)
        labels.append(label)
        rows.append(k)
    if not nets:
        raise DataError(f"{name} {split}: no network could be loaded ({report.skipped} skipped)")
    ws = [np.stack([n.weights[i] for n in nets]).astype(np.float32) for i in range(spec.n_layers)]
    bs = [np.stack([n.biases[i] for n in nets]).astype(np.float32) for i in range(spec.n_layers)]
    targets = np.asarray(labels, dtype=np.int64)
    row = np.asarray(rows, dtype=np.int64)
    if cache_path is not None:
        arrays: dict[str, NDArray] = {f"w{i}": w for i, w in enumerate(ws)}
        arrays.update({f"b{i}": b for i, b in enumerate(bs)})
        arrays.update({"targets": targets, "row": row})
        info = {"skipped": report.skipped, "problems": report.problems}
        meta = {"report": info, "sha256": _cache_digest(arrays, info)}
        atomic_write(cache_path, safetensors_bytes(arrays, meta))
    ds = StackedDataset(spec, ws, bs, targets, name=name, split=split, columns={"row": row}, report=report)
    ds.paths = [entries[r].path for r in rows]  # type: ignore[attr-defined]
    return ds


def _cache_digest(arrays: dict[str, NDArray], info: dict[str, Any]) -> str:
    """SHA-256 of a cache's arrays (name, dtype, shape, bytes) and its load report."""
    h = hashlib.sha256(json.dumps(info, sort_keys=True).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _from_cache(path: Path, spec: NetworkSpec, name: str, split: str) -> StackedDataset | None:
    """The cached dataset, or None (with a warning) when the cache fails its check."""
    try:
        arrays, meta = read_safetensors(path)
        info = meta.get("report")
        if not isinstance(info, dict) or meta.get("sha256") != _cache_digest(arrays, info):
            raise ZooError(f"{path}: checksum mismatch (corrupt, edited, or written before caches were checksummed)")
        ws = [arrays[f"w{i}"] for i in range(spec.n_layers)]
        bs = [arrays[f"b{i}"] for i in range(spec.n_layers)]
        targets, row = arrays["targets"], arrays["row"]
    except (ZooError, KeyError) as err:
        warnings.warn(f"loader cache refused, rebuilding it from the source files: {err}", stacklevel=3)
        return None
    report = LoadReport(skipped=info["skipped"], problems=info["problems"])
    return StackedDataset(spec, ws, bs, np.asarray(targets), name=name, split=split,
                          columns={"row": np.asarray(row)}, report=report)
