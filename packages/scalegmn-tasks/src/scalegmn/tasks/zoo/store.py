"""Reading and writing zoos: atomic shard files, checksums, checks against the manifest.

Shards are safetensors files, written and read with the `safetensors` library. Writing goes
through `scalegmn.weightgraph.io.atomic_write` (a uniquely named temporary file in the same
folder, synced and renamed over the final name), so a killed build never leaves a file
under a shard's name that is half written; the manifest records a shard (with its SHA-256)
only after its file is in place, and is itself replaced atomically. Each shard's metadata
repeats what the manifest says of it (architecture, first id, count), so a manifest edited
or mismatched afterwards is caught.

Opening a zoo reads only `manifest.json` and the small columns file, and cross-checks the
two (network count, split counts, class labels against the class count). A shard is read
the first time one of its networks is asked for: its checksum is verified, its metadata
compared with the manifest and its parameters checked to be finite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from safetensors import safe_open
from safetensors.numpy import save as safetensors_save

from scalegmn.weightgraph import Network, NetworkSpec
from scalegmn.weightgraph.io import atomic_write, sha256_bytes, sha256_file

from .manifest import SPLITS, Manifest, ShardRecord

MANIFEST = "manifest.json"
COLUMNS = "columns.safetensors"
SHARD_DIR = "shards"
META_KEY = "scalegmn"
"""The one safetensors metadata key: a JSON object (one key keeps the bytes reproducible)."""


class ZooError(ValueError):
    """A zoo folder or shard that is missing, corrupt, or does not match its manifest."""


def safetensors_bytes(arrays: Mapping[str, NDArray], metadata: Mapping[str, Any] | None = None) -> bytes:
    """Serialise numpy arrays with the safetensors library, byte for byte reproducibly.

    `metadata` is stored as one JSON string with sorted keys under `META_KEY`, so equal
    inputs give equal files (and equal checksums), which makes resumed builds verifiable.

    Raises:
        ZooError: for an array the format cannot hold.
    """
    meta = {META_KEY: json.dumps(dict(metadata or {}), sort_keys=True)}
    try:
        return safetensors_save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta)
    except Exception as err:  # safetensors reports unsupported dtypes with its own errors
        raise ZooError(f"cannot store arrays {sorted(arrays)[:5]} as safetensors: {err}") from None


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, NDArray], dict[str, Any]]:
    """Every array of a safetensors file (in memory) and its metadata.

    Metadata written by `safetensors_bytes` is decoded from `META_KEY`; other files'
    metadata is returned as the plain string mapping.

    Raises:
        ZooError: if the file is missing or is not a valid safetensors file (e.g. truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"missing file {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = dict(f.metadata() or {})
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # the library raises its own error for a bad header or a truncated file
        raise ZooError(f"{path}: not a valid safetensors file (truncated or corrupt: {err})") from None
    meta: dict[str, Any] = raw
    if META_KEY in raw:
        try:
            meta = json.loads(raw[META_KEY])
        except json.JSONDecodeError:
            raise ZooError(f"{path}: corrupt metadata") from None
    return arrays, meta


def shard_arrays(
    spec: NetworkSpec,
    weights: Sequence[NDArray],
    biases: Sequence[NDArray],
    columns: Mapping[str, NDArray],
) -> dict[str, NDArray]:
    """Name the arrays of one shard: `w{i}` `(n, *weight_shape)`, `b{i}` `(n, out)`, `col.<name>`.

    Raises:
        ZooError: if shapes do not match `spec` or columns have the wrong length.
    """
    n = int(weights[0].shape[0])
    out: dict[str, NDArray] = {}
    for i, layer in enumerate(spec.layers):
        w, b = np.asarray(weights[i]), np.asarray(biases[i])
        if w.shape != (n, *layer.weight_shape) or b.shape != (n, layer.n_out):
            raise ZooError(
                f"layer {i}: stacked weight {w.shape} / bias {b.shape}; expected "
                f"{(n, *layer.weight_shape)} / {(n, layer.n_out)}"
            )
        out[f"w{i}"], out[f"b{i}"] = w, b
    for name, col in columns.items():
        col = np.asarray(col)
        if col.shape[:1] != (n,):
            raise ZooError(f"column {name!r} has shape {col.shape}; expected ({n}, ...)")
        out[f"col.{name}"] = col
    return out


def write_shard(
    root: str | os.PathLike[str],
    index: int,
    spec_index: int,
    spec: NetworkSpec,
    start: int,
    weights: Sequence[NDArray],
    biases: Sequence[NDArray],
    columns: Mapping[str, NDArray],
) -> ShardRecord:
    """Write one shard file atomically and return its record (safe to call in a worker).

    Args:
        root: the zoo folder.
        index: shard number.
        spec_index: index of `spec` in the manifest's `specs`.
        spec: the architecture of every network in the shard.
        start: id of the first network.
        weights: per layer, stacked `(n, *weight_shape)` arrays in PyTorch layout.
        biases: per layer, stacked `(n, out)` arrays.
        columns: per-network columns, each `(n,)`.

    Raises:
        ZooError: for arrays that do not fit `spec`, or non-finite parameters.
    """
    arrays = shard_arrays(spec, weights, biases, columns)
    for k, a in arrays.items():
        if a.dtype.kind == "f" and not k.startswith("col.") and not np.all(np.isfinite(a)):
            rows = np.unique(np.nonzero(~np.isfinite(a.reshape(a.shape[0], -1)))[0])
            raise ZooError(f"shard {index}: {k} of networks {(rows + start).tolist()[:10]} is not finite")
    rel = f"{SHARD_DIR}/shard-{index:05d}.safetensors"
    count = int(weights[0].shape[0])
    meta = {"format": "scalegmn-zoo-shard", "start": start, "count": count, "spec": spec.model_dump(mode="json")}
    data = safetensors_bytes(arrays, meta)
    atomic_write(Path(root) / rel, data)
    return ShardRecord(
        index=index, file=rel, spec=spec_index, start=start, count=count, sha256=sha256_bytes(data), nbytes=len(data),
    )


def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> None:
    """Replace `manifest.json` atomically."""
    atomic_write(Path(root) / MANIFEST, manifest.model_dump_json(indent=1))


def read_manifest(root: str | os.PathLike[str]) -> Manifest:
    """Parse `root/manifest.json`.

    Raises:
        ZooError: if it is missing or invalid.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ZooError(f"{root} is not a zoo: {path} is missing")
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValueError as e:
        raise ZooError(f"{path}: invalid manifest: {e}") from None


def finalize(root: str | os.PathLike[str], manifest: Manifest) -> Manifest:
    """Gather every shard's columns into `columns.safetensors` and mark the zoo complete.

    Raises:
        ZooError: if shards are missing, overlap, or fail their checksum.
    """
    root = Path(root)
    shards = manifest.sorted_shards()
    if len(shards) != manifest.n_shards:
        missing = sorted(set(range(manifest.n_shards)) - manifest.completed())
        raise ZooError(f"{root}: shards {missing[:10]} are not written yet; resume the build")
    expect = 0
    for s in shards:
        if s.start != expect:
            raise ZooError(f"{root}: shard {s.index} starts at {s.start}, expected {expect}")
        expect += s.count
    if expect != manifest.n_networks:
        raise ZooError(f"{root}: shards hold {expect} networks, manifest says {manifest.n_networks}")
    parts: dict[str, list[NDArray]] = {c: [] for c in manifest.columns}
    for s in shards:
        path = root / s.file
        if sha256_file(path) != s.sha256:
            raise ZooError(f"{path}: checksum mismatch (corrupt shard); delete it and resume")
        arrays, _ = read_safetensors(path)
        for c in manifest.columns:
            if f"col.{c}" not in arrays:
                raise ZooError(f"{path}: column {c!r} is missing")
            parts[c].append(np.array(arrays[f"col.{c}"]))
    cols = {f"col.{c}": np.concatenate(v) for c, v in parts.items()}
    if not np.array_equal(cols["col.id"], np.arange(manifest.n_networks)):
        raise ZooError(f"{root}: network ids are not 0..{manifest.n_networks - 1} in order")
    data = safetensors_bytes(cols, {"format": "scalegmn-zoo-columns"})
    atomic_write(root / COLUMNS, data)
    split = cols["col.split"]
    counts = {name: int(np.sum(split == k)) for k, name in enumerate(SPLITS)}
    done = manifest.model_copy(update={
        "complete": True, "columns_file": COLUMNS,
        "columns_sha256": sha256_bytes(data), "split_counts": counts,
    })
    write_manifest(root, done)
    return done


class Zoo:
    """A zoo opened for reading; a shard is read, checked and kept the first time it is used.

    Opening reads `manifest.json` and `columns.safetensors` only and cross-checks them (see
    `check_columns`). `verify` decides when a shard's SHA-256 is checked: `"access"` (the
    first time the shard is used; default), `"open"` (every shard at open: reads
    everything), or `"none"`. A shard's metadata (architecture, first id, count) and the
    finiteness of its parameters are checked whenever it is read.

    Attributes:
        root: the zoo folder.
        manifest: the parsed manifest.
        columns: every per-network column, `(n_networks,)` arrays (`id`, `target`,
            `split`, `group`, and the builder's extras).
    """

    def __init__(
        self, root: str | os.PathLike[str], verify: Literal["access", "open", "none"] = "access"
    ) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        m = self.manifest
        if not m.complete or m.columns_file is None:
            raise ZooError(
                f"{self.root}: the zoo is incomplete ({len(m.shards)} of {m.n_shards} shards); "
                "resume its build (scalegmn zoo build ... --resume)"
            )
        if verify not in ("access", "open", "none"):
            raise ValueError(f"verify must be 'access', 'open' or 'none', got {verify!r}")
        self.verify = verify
        cpath = self.root / m.columns_file
        if verify != "none" and sha256_file(cpath) != m.columns_sha256:
            raise ZooError(f"{cpath}: checksum mismatch (corrupt columns file)")
        cols, _ = read_safetensors(cpath)
        self.columns: dict[str, NDArray] = {k[4:]: np.asarray(v) for k, v in cols.items()}
        check_columns(self.root, m, self.columns)
        self._shards = m.sorted_shards()
        self._starts = np.array([s.start for s in self._shards], dtype=np.int64)
        self._open: dict[int, dict[str, NDArray]] = {}
        self._check_architectures()
        if verify == "open":
            problems = self.verify_shards()
            if problems:
                raise ZooError(problems[0])

    def __len__(self) -> int:
        return self.manifest.n_networks

    @property
    def specs(self) -> list[NetworkSpec]:
        """The architectures of the zoo."""
        return self.manifest.specs

    @property
    def targets(self) -> NDArray:
        """`(n_networks,)` targets."""
        return self.columns["target"]

    @property
    def n_open_shards(self) -> int:
        """How many shards have been read so far."""
        return len(self._open)

    def split_ids(self, split: str | None) -> NDArray[np.int64]:
        """Ids of the networks in `split` (`"train"`, `"val"`, `"test"`; None: all)."""
        if split is None or split == "all":
            return np.arange(len(self), dtype=np.int64)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or 'all'")
        return np.nonzero(self.columns["split"] == SPLITS.index(split))[0].astype(np.int64)

    def _shard(self, k: int) -> dict[str, NDArray]:
        arrays = self._open.get(k)
        if arrays is None:
            arrays = self._read_shard(k, self.verify != "none")
            self._open[k] = arrays
        return arrays

    def _read_shard(self, k: int, checksum: bool) -> dict[str, NDArray]:
        """Shard `k` (in sorted order), read and checked against its record and the manifest."""
        rec = self._shards[k]
        path = self.root / rec.file
        span = f"networks {rec.start}..{rec.start + rec.count - 1}"
        if not path.is_file():
            raise ZooError(f"{path}: shard file is missing ({span})")
        if checksum and sha256_file(path) != rec.sha256:
            raise ZooError(
                f"{path}: checksum mismatch ({span}); the shard is corrupt: delete it and resume the build "
                "(scalegmn zoo build ... --resume rebuilds it)"
            )
        arrays, meta = read_safetensors(path)
        check_shard(path, rec, self.specs[rec.spec], arrays, meta)
        return arrays

    def _check_architectures(self) -> None:
        """Compare each architecture of the manifest with the metadata of one of its shards.

        Only the headers are read (of the first shard present for each architecture), so
        opening stays cheap; every shard is compared in full when it is read.
        """
        seen: set[int] = set()
        for rec in self._shards:
            path = self.root / rec.file
            if rec.spec in seen or not path.is_file():
                continue
            seen.add(rec.spec)
            try:
                with safe_open(str(path), framework="numpy") as f:
                    raw = (f.metadata() or {}).get(META_KEY)
            except Exception:  # a corrupt shard is reported, with its checksum, when it is read
                continue
            if raw is not None:
                meta = {k: v for k, v in json.loads(raw).items() if k == "spec"}
                check_shard(path, rec, self.specs[rec.spec], None, meta)

    def verify_shards(self, progress: Callable[[int], None] | None = None) -> list[str]:
        """Read and check every shard (checksum, metadata, finiteness) without keeping it.

        Args:
            progress: called with each shard's position once it is checked.

        Returns:
            One line per bad shard (empty when every shard is sound).
        """
        problems = []
        for k in range(len(self._shards)):
            try:
                self._read_shard(k, True)
            except ZooError as err:
                problems.append(str(err))
            if progress is not None:
                progress(k)
        return problems

    def locate(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """The position (in sorted shard order) of the shard holding each id."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"network id out of range 0..{len(self) - 1}")
        return np.searchsorted(self._starts, ids, side="right") - 1

    def spec_of(self, i: int) -> NetworkSpec:
        """The architecture of network `i`."""
        return self.specs[self._shards[int(self.locate(np.array([i]))[0])].spec]

    def params(self, ids: Sequence[int] | NDArray) -> tuple[NetworkSpec, list[NDArray], list[NDArray]]:
        """Stacked parameters of networks `ids`, which must share one architecture.

        Returns:
            `(spec, weights, biases)` with per-layer arrays `(len(ids), ...)` (PyTorch layout).

        Raises:
            ZooError: if the ids span architectures.
        """
        ids = np.asarray(ids, dtype=np.int64)
        where = self.locate(ids)
        spec_ids = {self._shards[k].spec for k in np.unique(where)}
        if len(spec_ids) != 1:
            raise ZooError(f"networks {ids[:5].tolist()}... span {len(spec_ids)} architectures")
        spec = self.specs[spec_ids.pop()]
        L = spec.n_layers
        ws = [np.empty((len(ids), *spec.layers[i].weight_shape), np.float32) for i in range(L)]
        bs = [np.empty((len(ids), spec.layers[i].n_out), np.float32) for i in range(L)]
        for k in np.unique(where):
            sel = np.nonzero(where == k)[0]
            local = ids[sel] - self._shards[k].start
            arrays = self._shard(int(k))
            for i in range(L):
                w, b = arrays[f"w{i}"], arrays[f"b{i}"]
                if ws[i].dtype != w.dtype:
                    ws[i], bs[i] = ws[i].astype(w.dtype), bs[i].astype(b.dtype)
                ws[i][sel] = w[local]
                bs[i][sel] = b[local]
        return spec, ws, bs

    def network(self, i: int) -> Network:
        """Network `i` as a `Network`."""
        spec, ws, bs = self.params([i])
        return Network(spec, [w[0] for w in ws], [b[0] for b in bs])

    def target_histogram(self, split: str | None = None, bins: int | NDArray = 10) -> tuple[NDArray, NDArray]:
        """Counts of each class (class targets) or a histogram (regression targets).

        Args:
            split: a split name, or None for every network.
            bins: number of bins or bin edges (regression targets only).

        Returns:
            `(values_or_bin_edges, counts)`.
        """
        t = self.targets[self.split_ids(split)]
        if self.manifest.target.kind == "class":
            n = self.manifest.target.n_classes or (int(t.max()) + 1 if t.size else 0)
            return np.arange(n), np.bincount(t.astype(np.int64), minlength=n)
        counts, edges = np.histogram(t.astype(np.float64), bins=bins)
        return edges, counts



def check_columns(root: Path, manifest: Manifest, columns: Mapping[str, NDArray]) -> None:
    """Cross-check a manifest with its columns file: counts, splits, class labels.

    Raises:
        ZooError: one line naming the mismatch and the manifest field.
    """
    where = root / MANIFEST
    missing = [c for c in ("id", "target", "split") if c not in columns]
    if missing:
        raise ZooError(f"{root / COLUMNS}: columns {missing} are missing")
    n = int(columns["id"].shape[0])
    if n != manifest.n_networks or any(len(v) != n for v in columns.values()):
        raise ZooError(f"{where}: n_networks is {manifest.n_networks} but the columns file holds {n} networks")
    held = sum(s.count for s in manifest.shards)
    if held != manifest.n_networks:
        raise ZooError(f"{where}: the shards hold {held} networks but n_networks is {manifest.n_networks}")
    split = columns["split"]
    counts = {name: int(np.sum(split == k)) for k, name in enumerate(SPLITS)}
    if manifest.split_counts and manifest.split_counts != counts:
        raise ZooError(f"{where}: split_counts says {manifest.split_counts} but the split column holds {counts}")
    target = manifest.target
    t = np.asarray(columns["target"])
    if target.kind == "class" and t.size:
        if t.dtype.kind == "f" and not np.all(t == np.round(t)):
            raise ZooError(f"{where}: target.kind is 'class' but the targets are not integers (a regression zoo?)")
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or (target.n_classes is not None and hi >= target.n_classes):
            raise ZooError(
                f"{where}: target.n_classes is {target.n_classes} but the labels run from {lo} to {hi}"
            )
        if target.class_names and target.n_classes is not None and len(target.class_names) != target.n_classes:
            raise ZooError(f"{where}: {len(target.class_names)} class_names for {target.n_classes} classes")


def check_shard(path: Path, rec: ShardRecord, spec: NetworkSpec, arrays: Mapping[str, NDArray] | None,
                meta: Mapping[str, Any]) -> None:
    """Check a shard read from `path` against its manifest record and architecture.

    The metadata (architecture, first id, count; absent in shards written before it was
    recorded) must agree with the manifest; the parameter arrays must have the shapes of
    `spec` and be finite (`arrays=None` checks the metadata only).

    Raises:
        ZooError: one line naming the file and, for non-finite values, the network ids.
    """
    if "spec" in meta:
        stored = NetworkSpec.model_validate(meta["spec"])
        if stored != spec:
            if stored.activations != spec.activations:
                what = f"activations {spec.activations} but the shard holds {stored.activations}"
            elif stored.widths != spec.widths:
                what = f"widths {spec.widths} but the shard holds {stored.widths}"
            else:
                what = "another architecture than the shard holds"
            raise ZooError(f"{path}: the manifest (specs[{rec.spec}]) says {what}; the manifest does not describe this zoo")
    for key, want in (("start", rec.start), ("count", rec.count)):
        if key in meta and int(meta[key]) != want:
            raise ZooError(f"{path}: the manifest records {key}={want} for this shard, the shard says {meta[key]}")
    if arrays is None:
        return
    for i, layer in enumerate(spec.layers):
        for name, shape in ((f"w{i}", (rec.count, *layer.weight_shape)), (f"b{i}", (rec.count, layer.n_out))):
            a = arrays.get(name)
            if a is None or tuple(a.shape) != shape:
                got = "missing" if a is None else f"shape {tuple(a.shape)}"
                raise ZooError(f"{path}: {name} is {got}; the manifest's architecture needs {shape}")
            if a.dtype.kind != "f":
                raise ZooError(f"{path}: {name} has dtype {a.dtype}; parameters are floating point")
            bad = ~np.isfinite(a.reshape(rec.count, -1)).all(axis=1)
            if bad.any():
                ids = (np.nonzero(bad)[0] + rec.start).tolist()
                raise ZooError(f"{path}: network {ids[0]} has non-finite parameters in {name} "
                               f"({len(ids)} network(s) affected: {ids[:5]}); rebuild this shard")
