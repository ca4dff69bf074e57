"""Data sources of a run: the project's zoos and the published data sets, as one config field.

A run's `data:` is one of four kinds (a pydantic union discriminated on `kind`):

```yaml
data: {kind: zoo, path: zoos/mnist}                   # or the shorthand  zoo: zoos/mnist
data: {kind: dws, root: /data/mnist-inrs}              # DWS MNIST folders or a splits.json
data: {kind: nfn_cifar, root: /data/cifar-inrs, augmented: true}
data: {kind: small_cnn_zoo, root: /data/cifar10-gs, activation: relu}
data: /data/mnist-inrs                                 # a bare path: the kind is detected
```

`open_split` opens a split with the loader of its kind (`scalegmn.tasks.datasets`);
`target_kind` says whether the targets are class labels or regression values;
`detect_data` recognises the kind from a folder's contents; `edit_targets_source` matches
DWS MNIST INRs to the MNIST images they were fitted to (the targets of INR editing).

The INR loaders read one `.pth` file per network; a stacked copy of every split is cached
(see `cache_dir_for`) so that only the first load reads the 70,000 files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from .datasets import NetworkDataset

KINDS = ("zoo", "dws", "nfn_cifar", "small_cnn_zoo")
"""The data kinds, the values of `kind`."""

CACHE_FOLDER = ".scalegmn-cache"
"""The cache folder made under a writable data root."""

OnError = Literal["raise", "skip"]
TargetKind = Literal["classification", "regression"]


class DataSourceError(ValueError):
    """A data source that cannot be used: an unknown layout, a bad option, unmatched images."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ZooData(_Data):
    """A zoo built by this project (`scalegmn zoo build`).

    Attributes:
        kind: always `"zoo"`.
        path: the zoo folder (holding `manifest.json`).
        verify: when shard checksums are checked (`"access"`, `"open"` or `"none"`).
    """

    kind: Literal["zoo"] = "zoo"
    path: Path
    verify: Literal["access", "open", "none"] = "access"


class DwsData(_Data):
    """The DWS MNIST or Fashion-MNIST INRs (`load_dws_inrs`).

    Attributes:
        kind: always `"dws"`.
        root: the folder of `mnist_png_*` folders, or of the F-MNIST files and `splits.json`.
        splits_file: a split JSON (default: `root/splits.json` if present, else the MNIST
            folder names decide).
        val_size: without a split file, training INRs drawn for validation.
        seed: the seed of that draw.
        images: a folder of the MNIST idx files (`train-images-idx3-ubyte[.gz]`, ...) whose
            images the INRs were fitted to: INR editing's targets (`edit_targets_source`).
        on_error: `"raise"` or `"skip"` bad files.
        cache: keep a stacked copy of each split (see `cache_dir_for`).
        cache_dir: where (None: under `root` if writable, else the user cache folder).
    """

    kind: Literal["dws"] = "dws"
    root: Path
    splits_file: Path | None = None
    val_size: int = Field(default=5000, ge=0)
    seed: int = 0
    images: Path | None = None
    on_error: OnError = "raise"
    cache: bool = True
    cache_dir: Path | None = None


class NfnCifarData(_Data):
    """NFN's CIFAR-10 INRs, plain or augmented (`load_nfn_cifar_inrs`).

    Attributes:
        kind: always `"nfn_cifar"`.
        root: the folder holding `randinit_smaller_{label}s/` (and `_aug{i}_` copies).
        augmented: add augmented copies to the training split: True for all, or a count.
        split_points: `(val_start, test_start)` network indices.
        on_error: `"raise"` or `"skip"` bad files.
        cache: keep a stacked copy of each split (see `cache_dir_for`).
        cache_dir: where (None: under `root` if writable, else the user cache folder).
    """

    kind: Literal["nfn_cifar"] = "nfn_cifar"
    root: Path
    augmented: bool | Annotated[int, Field(ge=0)] = False
    split_points: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] = (45000, 50000)
    on_error: OnError = "raise"
    cache: bool = True
    cache_dir: Path | None = None

    @model_validator(mode="after")
    def _ordered(self) -> NfnCifarData:
        if self.split_points[0] > self.split_points[1]:
            raise ValueError(f"split_points {self.split_points}: the validation start must not exceed the test start")
        return self


class SmallCnnZooData(_Data):
    """The Small CNN Zoo (CIFAR-10-GS, SVHN-GS) or a zoo in its format (`load_small_cnn_zoo`).

    `weights.npy` is memory-mapped, so this kind needs no cache.

    Attributes:
        kind: always `"small_cnn_zoo"`.
        root: the folder of `weights.npy`, `layout.csv`, `metrics.csv.gz`.
        split_file: NFN's permutation file (default: `cifar10_split.csv` or
            `svhn_split.csv` in `root` if exactly one exists; `"none"`: identity order).
        activation: keep only `"relu"` or `"tanh"` networks (None: both).
        step: keep only rows of this training step (None: every row).
        image_size: the networks' input height and width.
        on_error: `"raise"` or `"skip"` bad rows.
    """

    kind: Literal["small_cnn_zoo"] = "small_cnn_zoo"
    root: Path
    split_file: Literal["none"] | Path | None = None
    activation: Literal["relu", "tanh"] | None = None
    step: int | None = Field(default=86, ge=0)
    image_size: int = Field(default=32, ge=1)
    on_error: OnError = "raise"


DataConfig = Annotated[ZooData | DwsData | NfnCifarData | SmallCnnZooData, Field(discriminator="kind")]
"""One data source: `ZooData | DwsData | NfnCifarData | SmallCnnZooData`, chosen by `kind`."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(DataConfig)


def _one_line(err: ValidationError, what: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if x not in KINDS)
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return f"{what}: " + "; ".join(parts)


def parse_data(value: Any) -> DataConfig:
    """A data source from a config value.

    Args:
        value: a data source model; a mapping with `kind` (and that kind's fields); the
            shorthand mapping `{"zoo": PATH}`; or a bare path, whose kind is detected
            (`detect_data`).

    Returns:
        The validated data source.

    Raises:
        DataSourceError: one line naming the bad field, or why the kind is unknown.

    Example:
        ```python
        from pathlib import Path
        from scalegmn.tasks.data import parse_data

        assert parse_data({"kind": "dws", "root": "/data/mnist-inrs"}).val_size == 5000
        assert parse_data({"zoo": "zoos/mnist"}).path == Path("zoos/mnist")
        ```
    """
    if isinstance(value, _Data):
        return value  # type: ignore[return-value]
    if isinstance(value, (str, os.PathLike)):
        return detect_data(value)
    if not isinstance(value, Mapping):
        raise DataSourceError(f"data must be a mapping with a kind ({', '.join(KINDS)}) or a path, "
                              f"got {type(value).__name__}")
    if "kind" not in value:
        if set(value) == {"zoo"}:
            value = {"kind": "zoo", "path": value["zoo"]}
        else:
            raise DataSourceError(
                f"data needs a kind ({', '.join(KINDS)}), e.g. {{kind: dws, root: PATH}}; "
                f"got the keys {', '.join(map(str, value)) or 'none'}"
            )
    if value["kind"] not in KINDS:
        raise DataSourceError(f"data kind {value['kind']!r} is unknown; use one of {', '.join(KINDS)}")
    try:
        return _ADAPTER.validate_python(dict(value))  # type: ignore[no-any-return]
    except ValidationError as e:
        raise DataSourceError(_one_line(e, f"data (kind {value['kind']})")) from None


DataField = Annotated[DataConfig, BeforeValidator(parse_data)]
"""`DataConfig` as a config field that also takes the shorthands of `parse_data` (a bare path).

Example:
    ```python
    from pydantic import BaseModel, model_validator

    class Run(BaseModel):
        data: DataField
        _zoo = model_validator(mode="before")(zoo_shorthand)

    Run.model_validate({"zoo": "zoos/mnist"}).data.kind  # 'zoo'
    ```
"""


def zoo_shorthand(values: Any) -> Any:
    """Turn a config's `zoo: PATH` into `data: {kind: zoo, path: PATH}` (for a 'before' validator).

    Args:
        values: the raw config mapping (anything else is returned unchanged).

    Returns:
        The mapping with `zoo` replaced by `data`.

    Raises:
        DataSourceError: if both `zoo` and `data` are given.

    Example:
        ```python
        from scalegmn.tasks.data import zoo_shorthand

        out = zoo_shorthand({"zoo": "zoos/mnist", "epochs": 3})
        assert out == {"epochs": 3, "data": {"kind": "zoo", "path": "zoos/mnist"}}
        ```
    """
    if not isinstance(values, Mapping) or "zoo" not in values:
        return values
    out = dict(values)
    path = out.pop("zoo")
    if out.get("data") is not None:
        raise DataSourceError(f"give either zoo: {path} or data: ..., not both")
    out["data"] = {"kind": "zoo", "path": path}
    return out


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def user_cache_dir() -> Path:
    """The per-user cache folder: `$XDG_CACHE_HOME/scalegmn/datasets` (default `~/.cache/...`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scalegmn" / "datasets"


def cache_dir_for(data: DataConfig) -> Path | None:
    """Where the loader of `data` caches stacked splits, or None for no cache.

    `cache_dir` if set; else `root/.scalegmn-cache` when the data root is writable (the
    cache then lives beside the data and serves every run); else `user_cache_dir()`. Zoos
    and the Small CNN Zoo are memory-mapped and need none. A cache file is keyed by the
    list of files with their sizes and modification times, so a changed file is re-read.

    Args:
        data: a data source.

    Returns:
        The folder, or None.
    """
    if not isinstance(data, (DwsData, NfnCifarData)) or not data.cache:
        return None
    if data.cache_dir is not None:
        return data.cache_dir
    return data.root / CACHE_FOLDER if _writable(data.root) else user_cache_dir()


def open_split(data: DataConfig, split: str, *, progress: bool | None = None) -> NetworkDataset:
    """Open one split of a data source with its loader, with the loader's defaults.

    Args:
        data: a data source (`parse_data` makes one from a config value).
        split: `"train"`, `"val"`, `"test"` or `"all"`.
        progress: show a progress bar while reading files (default: for large sets).

    Returns:
        The dataset: `len(ds)`, `ds[i] -> (Network, target)`, `ds.targets`, batches.

    Raises:
        DataError: from the loader, naming the file or row at fault.
        ZooError: for a folder that is not a complete zoo.
    """
    from .datasets import load_dws_inrs, load_nfn_cifar_inrs, load_small_cnn_zoo, open_zoo

    if isinstance(data, ZooData):
        return open_zoo(data.path, split, verify=data.verify)
    if isinstance(data, DwsData):
        return load_dws_inrs(data.root, split, splits_file=data.splits_file, val_size=data.val_size, seed=data.seed,
                             on_error=data.on_error, cache_dir=cache_dir_for(data), progress=progress)
    if isinstance(data, NfnCifarData):
        return load_nfn_cifar_inrs(data.root, split, augmented=data.augmented, split_points=data.split_points,
                                   on_error=data.on_error, cache_dir=cache_dir_for(data), progress=progress)
    if isinstance(data, SmallCnnZooData):
        return load_small_cnn_zoo(data.root, split, data.activation, step=data.step, split_file=data.split_file,
                                  image_size=data.image_size, on_error=data.on_error)
    raise DataSourceError(f"not a data source: {type(data).__name__}; use parse_data")


def target_kind(data: DataConfig) -> TargetKind:
    """Whether a data source's targets are class labels or regression values.

    The INR sets are classified (the image's class); the Small CNN Zoo's target is each
    CNN's test accuracy (generalisation prediction); a zoo says so in its manifest.

    Args:
        data: a data source.

    Returns:
        `"classification"` or `"regression"`.

    Raises:
        ZooError: if a zoo's manifest cannot be read.
    """
    if isinstance(data, ZooData):
        from .zoo.store import read_manifest

        return "classification" if read_manifest(data.path).target.kind == "class" else "regression"
    return "regression" if isinstance(data, SmallCnnZooData) else "classification"


_MNIST_DIR = re.compile(r"mnist_png_(training|testing)_(\d+)_(\d+)$")
_NFN_DIR = re.compile(r"randinit_smaller_(aug\d+_)?\d+s$")
_LOOKED_FOR = ("a zoo manifest.json (zoo), mnist_png_* folders or splits.json (dws), randinit_smaller_* folders "
               "(nfn_cifar), weights.npy with layout.csv (small_cnn_zoo)")


def _evidence(path: Path) -> tuple[dict[str, str], list[str]]:
    """What in `path` points at each kind, and near misses worth naming."""
    found: dict[str, str] = {}
    near: list[str] = []
    mnist = nfn = 0
    first_mnist = first_nfn = ""
    with os.scandir(path) as it:
        for e in it:
            if _MNIST_DIR.match(e.name) and e.is_dir():
                mnist += 1
                first_mnist = first_mnist or e.name
            elif _NFN_DIR.match(e.name) and e.is_dir():
                nfn += 1
                first_nfn = first_nfn or e.name
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            fmt = json.loads(manifest.read_text()).get("format")
        except (OSError, ValueError, AttributeError):
            fmt = None
        if fmt == "scalegmn-zoo":
            found["zoo"] = "manifest.json"
        else:
            near.append("a manifest.json that is not a scalegmn-zoo manifest")
    dws = [f"{mnist} mnist_png_* folders (e.g. {first_mnist})"] if mnist else []
    if (path / "splits.json").is_file():
        dws.append("splits.json")
    if dws:
        found["dws"] = " and ".join(dws)
    if nfn:
        found["nfn_cifar"] = f"{nfn} randinit_smaller_* folders (e.g. {first_nfn})"
    has_w, has_l = (path / "weights.npy").is_file(), (path / "layout.csv").is_file()
    if has_w and has_l:
        found["small_cnn_zoo"] = "weights.npy and layout.csv"
    elif has_w or has_l:
        near.append("weights.npy without layout.csv" if has_w else "layout.csv without weights.npy")
    return found, near


def detect_kind(path: str | os.PathLike[str]) -> str:
    """The kind of data in a folder, recognised from its contents.

    Rules: a `manifest.json` of format `scalegmn-zoo` -> `zoo`; `mnist_png_*` folders or a
    `splits.json` -> `dws`; `randinit_smaller_*` folders -> `nfn_cifar`; `weights.npy` and
    `layout.csv` -> `small_cnn_zoo`. Exactly one kind must match.

    Args:
        path: the data folder.

    Returns:
        One of `KINDS`.

    Raises:
        DataSourceError: one line naming what was found (several kinds, or none) and how
            to give the kind explicitly.
    """
    p = Path(path)
    if not p.is_dir():
        raise DataSourceError(f"data folder {p} does not exist" if not p.exists() else f"data path {p} is not a folder")
    found, near = _evidence(p)
    if len(found) == 1:
        return next(iter(found))
    explicit = f"give the kind explicitly, e.g. data: {{kind: {next(iter(found), 'dws')}, root: {p}}}"
    if found:
        seen = "; ".join(f"{k}: {v}" for k, v in found.items())
        raise DataSourceError(f"{p}: the kind of data is ambiguous ({seen}); {explicit}")
    extra = f" (found only {', '.join(near)})" if near else ""
    raise DataSourceError(f"{p}: no known data layout{extra}; looked for {_LOOKED_FOR}; {explicit}")


def detect_data(
    path: str | os.PathLike[str], kind: str | None = None, **options: Any,
) -> DataConfig:
    """A data source for a folder, its kind recognised from the contents (`detect_kind`).

    Args:
        path: the data folder (the zoo's `path` or the data set's `root`).
        kind: the kind, if known (e.g. from a preset): detection then only checks that the
            folder does not look like another kind.
        **options: further fields of that kind (e.g. `augmented=True`).

    Returns:
        The validated data source, with the loader's defaults for what `options` omit.

    Raises:
        DataSourceError: for an unknown or ambiguous layout, a folder of another kind than
            `kind`, or an option that kind does not take.

    Example:
        ```python
        from scalegmn.tasks.data import detect_data
        from scalegmn.tasks.datasets.testing import write_dws_mnist

        write_dws_mnist("mnist-inrs", n_train=2, n_test=1)  # a tiny folder in the DWS MNIST layout
        assert detect_data("mnist-inrs").kind == "dws"
        ```
    """
    p = Path(path)
    if kind is None:
        kind = detect_kind(p)
    elif kind not in KINDS:
        raise DataSourceError(f"data kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    elif p.is_dir():
        found, _ = _evidence(p)
        if found and kind not in found:
            seen = "; ".join(f"{k}: {v}" for k, v in found.items())
            raise DataSourceError(f"{p} does not look like {kind} data ({seen}); check the path or the kind")
    field = "path" if kind == "zoo" else "root"
    return parse_data({"kind": kind, field: p, **options})


_MNIST_PARTS = {"training": "train", "testing": "t10k"}


def _idx_file(folder: Path, part: str, what: str) -> Path | None:
    """The first of `{part}-{what}-ubyte`, `{part}-{what}-ubyte.gz` and the dotted variants."""
    stem = what.replace("-", ".", 1)
    for name in (f"{part}-{what}-ubyte", f"{part}-{what}-ubyte.gz", f"{part}-{stem}-ubyte", f"{part}-{stem}-ubyte.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_mnist(folder: str | os.PathLike[str], kind: str) -> tuple[NDArray[np.uint8], NDArray[np.uint8] | None]:
    """The MNIST training or test images (and labels, if their file is there) from idx files.

    Args:
        folder: holds `train-images-idx3-ubyte[.gz]` / `t10k-images-idx3-ubyte[.gz]` (the
            dotted names `train-images.idx3-ubyte` are accepted too), and optionally the
            matching `*-labels-idx1-ubyte[.gz]`.
        kind: `"training"` or `"testing"` (the words of the DWS folder names).

    Returns:
        `(images (n, H, W) uint8, labels (n,) uint8 or None)`.

    Raises:
        DataSourceError: if the images file is missing or the files do not fit together.
    """
    from .sources import SourceError, read_idx

    root = Path(folder)
    part = _MNIST_PARTS[kind]
    f = _idx_file(root, part, "images-idx3")
    if f is None:
        raise DataSourceError(f"images: {root} has no {part}-images-idx3-ubyte[.gz] (the MNIST {kind} images)")
    lf = _idx_file(root, part, "labels-idx1")
    try:
        images = read_idx(f)
        labels = read_idx(lf) if lf is not None else None
    except SourceError as e:
        raise DataSourceError(f"images: {e}") from None
    if images.ndim != 3:
        raise DataSourceError(f"images: {f} holds an array of shape {images.shape}, not (n, height, width)")
    if labels is not None and labels.shape != images.shape[:1]:
        raise DataSourceError(f"images: {lf} holds {labels.shape} labels for {len(images)} images in {f.name}")
    return images, labels


def inr_paths(data: DwsData, ds: NetworkDataset) -> list[Path]:
    """The `.pth` file of each network of a DWS split, in dataset order (cached splits included).

    Args:
        data: the data source `ds` was opened from.
        ds: a split from `open_split(data, ...)`.

    Raises:
        DataSourceError: if the files listed no longer match the dataset.
    """
    paths = getattr(ds, "paths", None)
    if paths is None:
        # a split memory-mapped from the cache keeps its rows in the listing, not the paths
        from .datasets.dws import _entries_from_split_file, _mnist_entries

        root = data.root
        sf = data.splits_file if data.splits_file is not None else root / "splits.json"
        if sf.is_file():
            splits = ("train", "val", "test") if ds.split == "all" else (ds.split,)
            entries = [e for s in splits for e in _entries_from_split_file(root, sf, s)]
        else:
            entries = _mnist_entries(root, ds.split, data.val_size, data.seed)
        rows = np.asarray(ds.columns["row"], dtype=np.int64)
        if len(rows) and int(rows.max()) >= len(entries):
            raise DataSourceError(f"{root}: the {ds.split} split lists {len(entries)} files but the dataset has "
                                  f"row {int(rows.max())}; delete the stale cache in {cache_dir_for(data)}")
        paths = [entries[int(r)].path for r in rows]
    if len(paths) != len(ds):
        raise DataSourceError(f"{data.root}: {len(paths)} files for {len(ds)} networks in the {ds.split} split")
    return list(paths)


def _mnist_ref(path: Path) -> tuple[str, int, int] | None:
    for part in reversed(path.parts):
        m = _MNIST_DIR.match(part)
        if m is not None:
            return m.group(1), int(m.group(2)), int(m.group(3))
    return None


def edit_targets_source(
    data: DataConfig, images: str | os.PathLike[str] | None = None,
    splits: Sequence[str] = ("train", "val", "test"), datasets: Mapping[str, NetworkDataset] | None = None,
) -> dict[str, NDArray[np.float32] | None]:
    """The source image of every INR of each split, for INR editing's dilation targets.

    A DWS MNIST INR in `mnist_png_{training,testing}_{label}_{idx}` was fitted to image
    `idx` of the MNIST training or test set; its image is read from the idx files in
    `images` and the folder's label is checked against the idx labels when that file is
    there. Without images a split's entry is None: the loop then dilates the render of each
    INR instead.

    Args:
        data: the data source.
        images: the folder of MNIST idx files (default: `data.images` of a `DwsData`).
        splits: the splits to match.
        datasets: splits already opened with `open_split(data, split)` (others are opened).

    Returns:
        `split -> (n, H, W)` float32 images in `[0, 1]`, in dataset order, or None.

    Raises:
        DataSourceError: if images are given for data that is not DWS MNIST INRs, or an
            INR's image is missing or has another label.
    """
    if images is None:
        images = data.images if isinstance(data, DwsData) else None
    if images is None:
        return {s: None for s in splits}
    if not isinstance(data, DwsData):
        raise DataSourceError(f"images: {images} only applies to DWS MNIST INRs, not to {data.kind} data; remove it")  # type: ignore[attr-defined]
    cache: dict[str, tuple[NDArray[np.uint8], NDArray[np.uint8] | None]] = {}
    out: dict[str, NDArray[np.float32] | None] = {}
    for s in splits:
        ds = datasets[s] if datasets is not None and s in datasets else open_split(data, s)
        paths = inr_paths(data, ds)
        refs = [_mnist_ref(p) for p in paths]
        bad = next((p for p, r in zip(paths, refs, strict=True) if r is None), None)
        if bad is not None:
            raise DataSourceError(
                f"images: {bad} (split {s}) is not in a mnist_png_{{training,testing}}_<label>_<idx> folder, so "
                "its MNIST image is unknown; remove images: to use the render of each INR as its target"
            )
        picked = []
        for p, (kind, label, idx) in zip(paths, refs, strict=True):  # type: ignore[misc]
            if kind not in cache:
                cache[kind] = read_mnist(images, kind)
            imgs, labels = cache[kind]
            if idx >= len(imgs):
                raise DataSourceError(f"images: {p} names MNIST {kind} image {idx}, but {images} holds {len(imgs)}")
            if labels is not None and int(labels[idx]) != label:
                raise DataSourceError(f"images: {p} has label {label} but MNIST {kind} image {idx} is a "
                                      f"{int(labels[idx])}; the idx files are not the ones the INRs were fitted to")
            picked.append(imgs[idx])
        if not picked:
            raise DataSourceError(f"{data.root}: the {s} split is empty")
        out[s] = np.stack(picked).astype(np.float32) / np.float32(255.0)
    return out
