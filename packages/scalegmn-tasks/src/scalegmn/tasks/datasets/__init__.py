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
from .dws import DWS_SPEC, load_dws_inrs
from .loaders import batch_indices, iterate_batches, torch_collate_fn, torch_dataloader
from .nfn import NFN_CIFAR_SPEC, load_nfn_cifar_inrs
from .small_cnn import SmallCNNZooDataset, load_small_cnn_zoo
from .zoo import ZooDataset, open_zoo

__all__ = [
    "DWS_SPEC",
    "NFN_CIFAR_SPEC",
    "ConcatDataset",
    "DataError",
    "LoadReport",
    "NetworkDataset",
    "SmallCNNZooDataset",
    "StackedDataset",
    "ZooDataset",
    "batch_indices",
    "iterate_batches",
    "load_dws_inrs",
    "load_nfn_cifar_inrs",
    "load_small_cnn_zoo",
    "open_zoo",
    "torch_collate_fn",
    "torch_dataloader",
]
