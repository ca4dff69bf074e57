"""Reading and writing zoos: atomic shard files, checksums, lazy memory-mapped access.

Shards are safetensors files. Writing goes to a temporary file in the same folder, which
is flushed, synced and renamed over the final name (`os.replace`), so a killed build never
leaves a file under a shard's name that is half written; the manifest records a shard (with
its SHA-256) only after its file is in place, and is itself replaced atomically. Reading
parses the safetensors header and memory-maps each tensor, so opening a zoo reads only
`manifest.json` and the small columns file; a shard is read (and its checksum verified)
the first time one of its networks is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph import Network, NetworkSpec

from .manifest import SPLITS, Manifest, ShardRecord

MANIFEST = "manifest.json"
COLUMNS = "columns.safetensors"
SHARD_DIR = "shards"

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


class ZooError(ValueError):
    """A zoo folder or shard that is missing, corrupt, or does not match its manifest."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file in the same folder + `os.replace`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def safetensors_bytes(arrays: Mapping[str, NDArray], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise numpy arrays to the safetensors format, byte for byte reproducibly.

    Tensors are laid out in name order and the header is JSON with sorted keys, so equal
    inputs give equal files (and equal checksums), which makes resumed builds verifiable.
    """
    names = sorted(arrays)
    codes = {np.dtype(v): k for k, v in _DTYPES.items()}
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    blobs, offset = [], 0
    for name in names:
        a = np.ascontiguousarray(arrays[name])
        if a.dtype not in codes:
            raise ZooError(f"array {name!r} has unsupported dtype {a.dtype}")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        raw = a.tobytes()
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def read_safetensors_header(path: str | os.PathLike[str]) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the byte offset where its data starts.

    Raises:
        ZooError: if the file is missing or its header is not valid.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ZooError(f"{path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > 100_000_000:
                raise ZooError(f"{path}: implausible safetensors header length {n}")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise ZooError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZooError(f"{path}: corrupt safetensors header ({e})") from None
    return header, 8 + n


def memmap_safetensors(path: str | os.PathLike[str]) -> dict[str, NDArray]:
    """Every tensor of a safetensors file as a read-only `np.memmap` (nothing is read yet).

    Raises:
        ZooError: for a bad header or a tensor that lies outside the file.
    """
    header, start = read_safetensors_header(path)
    size = os.path.getsize(path)
    out: dict[str, NDArray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ZooError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')}")
        lo, hi = info["data_offsets"]
        shape = tuple(info["shape"])
        if start + hi > size or hi - lo != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize:
            raise ZooError(f"{path}: tensor {name!r} does not fit the file (truncated?)")
        if hi == lo:
            out[name] = np.zeros(shape, dtype)
        else:
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=start + lo, shape=shape)
    return out


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
    data = safetensors_bytes(arrays, {"format": "scalegmn-zoo-shard", "start": str(start)})
    atomic_write_bytes(Path(root) / rel, data)
    return ShardRecord(
        index=index, file=rel, spec=spec_index, start=start, count=int(weights[0].shape[0]),
        sha256=hashlib.sha256(data).hexdigest(), nbytes=len(data),
    )


def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> None:
    """Replace `manifest.json` atomically."""
    atomic_write_bytes(Path(root) / MANIFEST, manifest.model_dump_json(indent=1).encode())


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
        arrays = memmap_safetensors(path)
        for c in manifest.columns:
            if f"col.{c}" not in arrays:
                raise ZooError(f"{path}: column {c!r} is missing")
            parts[c].append(np.array(arrays[f"col.{c}"]))
    cols = {f"col.{c}": np.concatenate(v) for c, v in parts.items()}
    if not np.array_equal(cols["col.id"], np.arange(manifest.n_networks)):
        raise ZooError(f"{root}: network ids are not 0..{manifest.n_networks - 1} in order")
    data = safetensors_bytes(cols, {"format": "scalegmn-zoo-columns"})
    atomic_write_bytes(root / COLUMNS, data)
    split = cols["col.split"]
    counts = {name: int(np.sum(split == k)) for k, name in enumerate(SPLITS)}
    done = manifest.model_copy(update={
        "complete": True, "columns_file": COLUMNS,
        "columns_sha256": hashlib.sha256(data).hexdigest(), "split_counts": counts,
    })
    write_manifest(root, done)
    return done


class Zoo:
    """A zoo opened for reading; shards are memory-mapped on first use.

    Opening reads `manifest.json` and `columns.safetensors` only. `verify` decides when a
    shard's SHA-256 is checked: `"access"` (the first time the shard is used; default),
    `"open"` (every shard at open: reads everything), or `"none"`.

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
        cols = memmap_safetensors(cpath)
        self.columns: dict[str, NDArray] = {k[4:]: np.asarray(v) for k, v in cols.items()}
        self._shards = m.sorted_shards()
        self._starts = np.array([s.start for s in self._shards], dtype=np.int64)
        self._open: dict[int, dict[str, NDArray]] = {}
        if verify == "open":
            for k in range(len(self._shards)):
                self._shard(k)

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
            rec = self._shards[k]
            path = self.root / rec.file
            if not path.is_file():
                raise ZooError(f"{path}: shard file is missing (networks {rec.start}..{rec.start + rec.count - 1})")
            if self.verify != "none" and sha256_file(path) != rec.sha256:
                raise ZooError(
                    f"{path}: checksum mismatch (networks {rec.start}..{rec.start + rec.count - 1}); "
                    "the shard is corrupt: delete it, mark the zoo incomplete and resume the build"
                )
            arrays = memmap_safetensors(path)
            self._open[k] = arrays
        return arrays

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


def open_zoo_store(path: str | os.PathLike[str], verify: Literal["access", "open", "none"] = "access") -> Zoo:
    """Open a zoo folder for reading (see `Zoo`)."""
    return Zoo(path, verify=verify)
