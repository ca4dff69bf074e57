"""The manifest of a zoo: what a zoo holds, how it was built, and which shards are complete.

A zoo is a folder::

    manifest.json                 this schema (JSON)
    shards/shard-00000.safetensors parameters and per-network columns of one shard
    columns.safetensors           every per-network column, all networks (written last)

The manifest embeds the architecture(s) as `NetworkSpec`s; every shard holds networks of
one architecture.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scalegmn.weightgraph import NetworkSpec

FORMAT = "scalegmn-zoo"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
"""Split names; the `split` column stores their index (0, 1, 2)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShardRecord(_Model):
    """One complete shard: networks `start .. start + count - 1`, all of `specs[spec]`.

    Attributes:
        index: shard number (its file is `shards/shard-{index:05d}.safetensors`).
        file: path relative to the zoo folder.
        spec: index into `Manifest.specs`.
        start: id of its first network.
        count: number of networks.
        sha256: hex digest of the file.
        nbytes: file size in bytes.
    """

    index: int = Field(ge=0)
    file: str
    spec: int = Field(ge=0)
    start: int = Field(ge=0)
    count: int = Field(ge=1)
    sha256: str = Field(min_length=64, max_length=64)
    nbytes: int = Field(ge=0)


class TargetInfo(_Model):
    """What `ds[i][1]` is.

    Attributes:
        name: e.g. `"label"` or `"test_accuracy"`.
        kind: `"class"` (integer labels) or `"regression"` (floats).
        n_classes: number of classes for `kind="class"`.
        class_names: one name per class (optional).
    """

    name: str = "label"
    kind: Literal["class", "regression"] = "class"
    n_classes: int | None = None
    class_names: list[str] = Field(default_factory=list)


class Manifest(_Model):
    """Everything about a zoo except the arrays.

    Attributes:
        format: always `"scalegmn-zoo"`.
        format_version: bumped on incompatible changes.
        kind: `"inr"`, `"cnn"`, or `"custom"`.
        specs: the architectures; shards point into this list.
        n_networks: networks the finished zoo holds.
        n_shards: shards the finished zoo holds.
        target: the meaning of the target column.
        source: where the training data came from (name, size, image shape ...).
        build: every option of the build; a resumed build must pass the same.
        seed: the seed everything random was drawn from.
        recipe: how the networks were obtained, for builders with named recipes (INR zoos:
            name, initialisation and fitting settings; empty otherwise).
        columns: per-network columns stored in each shard and in `columns.safetensors`
            (always `id`, `target`, `split`, `group`; builders add e.g. `psnr`, `epoch`).
        categories: for categorical columns, the name of each integer code.
        shards: the complete shards, in any order.
        complete: True once every shard and the columns file are written.
        columns_file: the consolidated columns file (set when complete).
        columns_sha256: its SHA-256.
        split_counts: networks per split (set when complete).
        history: one entry per build run (seconds, networks built, workers, host load).
    """

    format: Literal["scalegmn-zoo"] = "scalegmn-zoo"
    format_version: int = FORMAT_VERSION
    kind: str = "custom"
    specs: list[NetworkSpec] = Field(min_length=1)
    n_networks: int = Field(ge=0)
    n_shards: int = Field(ge=0)
    target: TargetInfo = Field(default_factory=TargetInfo)
    source: dict[str, Any] = Field(default_factory=dict)
    build: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    recipe: dict[str, Any] = Field(default_factory=dict)
    columns: list[str] = Field(default_factory=lambda: ["id", "target", "split", "group"])
    categories: dict[str, list[str]] = Field(default_factory=dict)
    shards: list[ShardRecord] = Field(default_factory=list)
    complete: bool = False
    columns_file: str | None = None
    columns_sha256: str | None = None
    split_counts: dict[str, int] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)

    def completed(self) -> set[int]:
        """Indices of the shards already written."""
        return {s.index for s in self.shards}

    def sorted_shards(self) -> list[ShardRecord]:
        """The complete shards ordered by their first network id."""
        return sorted(self.shards, key=lambda s: s.start)
