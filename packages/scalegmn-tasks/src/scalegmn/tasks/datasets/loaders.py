"""Batches for either backend: a PyTorch `DataLoader` and a plain numpy iterator for JAX.

Both draw index batches, fetch the networks of a batch in one call (`ds.networks`, a
fancy index into stacked arrays) and hand them to the backend's `collate`, imported only
when used: `scalegmn.torch.collate` or `scalegmn.jax.collate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scalegmn.weightgraph import Network

from .base import NetworkDataset

Collate = Callable[[list[Network]], Any]


def batch_indices(
    n: int, batch_size: int, shuffle: bool = False, seed: int | None = 0, epoch: int = 0,
    drop_last: bool = False,
) -> list[NDArray[np.int64]]:
    """Index batches of `range(n)`; shuffled from `default_rng([seed, epoch])` if asked.

    Raises:
        ValueError: for a non-positive batch size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.random.default_rng([seed or 0, epoch]).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def iterate_batches(
    ds: NetworkDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = 0,
    epoch: int = 0,
    drop_last: bool = False,
    collate: Collate | str | None = "jax",
) -> Iterator[tuple[Any, NDArray]]:
    """Yield `(batch, targets)` with numpy targets; for JAX training loops.

    Args:
        ds: a dataset.
        batch_size: networks per batch.
        shuffle: shuffle (a different order per `epoch`, fixed by `seed`).
        seed: the shuffle's seed.
        epoch: the epoch number (each epoch has its own order).
        drop_last: drop a last, smaller batch.
        collate: `"jax"` (`scalegmn.jax.collate`), `"torch"`, `"dense"` (a numpy
            `DenseBatch` from the dataset's graph cache), a callable on a list of
            networks, or None (the list of networks itself).
    """
    fn = _resolve(collate)
    for idx in batch_indices(len(ds), batch_size, shuffle, seed, epoch, drop_last):
        if collate == "dense":
            yield ds.dense_batch(idx)
            continue
        nets, targets = ds.batch(idx)
        yield (fn(nets) if fn is not None else nets), targets


def _resolve(collate: Collate | str | None) -> Collate | None:
    if collate is None or callable(collate):
        return collate  # type: ignore[return-value]
    if collate == "jax":
        from scalegmn.jax import collate as jax_collate

        return jax_collate
    if collate == "torch":
        from scalegmn.torch import collate as torch_collate

        return torch_collate
    if collate == "dense":
        return None
    raise ValueError(f"collate must be 'jax', 'torch', 'dense', a callable or None; got {collate!r}")


def torch_collate_fn(collate: Collate | None = None) -> Callable[[Sequence[tuple[Network, Any]]], tuple[Any, Any]]:
    """A `DataLoader` `collate_fn`: `[(Network, target), ...] -> (batch, target tensor)`.

    Args:
        collate: turns a list of networks into a model input (default:
            `scalegmn.torch.collate`).
    """

    def fn(items: Sequence[tuple[Network, Any]]) -> tuple[Any, Any]:
        import torch

        c = collate if collate is not None else _resolve("torch")
        nets = [n for n, _ in items]
        targets = torch.as_tensor(np.asarray([t for _, t in items]))
        return c(nets), targets  # type: ignore[misc]

    return fn


def torch_dataloader(
    ds: NetworkDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    collate: Collate | None = None,
    num_workers: int = 0,
    **kwargs: Any,
) -> Any:
    """A `torch.utils.data.DataLoader` over `ds` yielding `(collate(networks), targets)`.

    The dataset fetches a whole batch at once (`__getitems__`), so worker processes are
    rarely needed (`num_workers=0` by default).

    Args:
        ds: a dataset.
        batch_size: networks per batch.
        shuffle: shuffle every epoch.
        drop_last: drop a last, smaller batch.
        num_workers: `DataLoader` worker processes.
        seed: seeds the shuffle (a `torch.Generator`), so runs repeat exactly.
        collate: list of networks -> model input (default `scalegmn.torch.collate`).
        **kwargs: passed to `DataLoader`.
    """
    import torch
    from torch.utils.data import DataLoader

    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=gen,  # type: ignore[arg-type]
        collate_fn=torch_collate_fn(collate), num_workers=num_workers, **kwargs,
    )
