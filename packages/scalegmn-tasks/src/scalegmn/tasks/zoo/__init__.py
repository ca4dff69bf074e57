"""Model zoos: the project's zoo format, and builders for INR and CNN zoos.

A zoo is a folder of safetensors shards (networks of one architecture each) plus a JSON
manifest (`Manifest`). Build one with `build_inr_zoo` / `build_cnn_zoo` (or
`scalegmn zoo build inr|cnn`), read one with `Zoo` or, as a dataset,
`scalegmn.tasks.datasets.open_zoo`.
"""

from __future__ import annotations

from .build import BuildStats, ShardTask, run_build
from .cnn import CNNZooOptions, build_cnn_zoo, plan_cnn_zoo
from .inr import (
    RECIPES,
    INRRecipe,
    INRZooOptions,
    assign_splits,
    build_inr_zoo,
    default_recipe,
    plan_inr_zoo,
)
from .manifest import SPLITS, Manifest, ShardRecord, TargetInfo
from .store import Zoo, ZooError, write_shard

__all__ = [
    "RECIPES",
    "SPLITS",
    "BuildStats",
    "CNNZooOptions",
    "INRRecipe",
    "INRZooOptions",
    "Manifest",
    "ShardRecord",
    "ShardTask",
    "TargetInfo",
    "Zoo",
    "ZooError",
    "assign_splits",
    "build_cnn_zoo",
    "build_inr_zoo",
    "default_recipe",
    "plan_cnn_zoo",
    "plan_inr_zoo",
    "run_build",
    "write_shard",
]
