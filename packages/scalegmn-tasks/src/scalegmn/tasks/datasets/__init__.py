"""Datasets of networks: the project's zoos and the published INR and CNN zoos.

Every loader returns a `NetworkDataset`: `len(ds)`, `ds[i] -> (Network, target)`,
`ds.targets`, `ds.batch(indices)`, `ds.dense_batch(indices)`; `torch_dataloader` and
`iterate_batches` turn one into batches for the PyTorch or JAX backend.
"""

from __future__ import annotations

from .base import (
    ConcatDataset,
    DataError,
    LoadReport,
    NetworkDataset,
    StackedDataset,
)
from .loaders import batch_indices, iterate_batches, torch_collate_fn, torch_dataloader
from .zoo import ZooDataset, open_zoo

__all__ = [
    "ConcatDataset",
    "DataError",
    "LoadReport",
    "NetworkDataset",
    "StackedDataset",
    "ZooDataset",
    "batch_indices",
    "iterate_batches",
    "open_zoo",
    "torch_collate_fn",
    "torch_dataloader",
]
