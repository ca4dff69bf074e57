"""The common dataset interface on the project's own zoos, and batches for both backends."""

from __future__ import annotations

import numpy as np
import pytest

from scalegmn.tasks.datasets import (
    ConcatDataset,
    batch_indices,
    iterate_batches,
    open_zoo,
    torch_dataloader,
)
from scalegmn.tasks.sources import ImageSource, digits
from scalegmn.tasks.zoo import Zoo, build_inr_zoo
from scalegmn.weightgraph import Network, to_dense_batch


@pytest.fixture(scope="module")
def zoo_path(tmp_path_factory):
    d = digits()
    src = ImageSource.from_array(d.images[:40], d.labels[:40], name="digits40")
    path = tmp_path_factory.mktemp("zoo") / "z"
    build_inr_zoo(path, src, count=40, steps=3, shard_size=16, val_fraction=0.2, test_fraction=0.2,
                  progress=False)
    return path


def test_splits_items_and_targets(zoo_path):
    zoo = Zoo(zoo_path)
    parts = {s: open_zoo(zoo_path, s) for s in ("train", "val", "test")}
    assert [len(p) for p in parts.values()] == [24, 8, 8]
    ids = np.concatenate([p.ids for p in parts.values()])
    assert sorted(ids.tolist()) == list(range(40))
    ds = parts["val"]
    for i in range(len(ds)):
        net, y = ds[i]
        assert isinstance(net, Network) and isinstance(y, int)
        assert y == zoo.targets[ds.ids[i]]
        assert net.equals(zoo.network(int(ds.ids[i])))
    assert ds.columns["psnr"].shape == (8,)
    assert len(open_zoo(zoo_path, "all")) == 40
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        open_zoo(zoo_path, "dev")
    with pytest.raises(IndexError):
        ds[8]


def test_batches_cache_and_dense_graphs(zoo_path):
    ds = open_zoo(zoo_path, "train")
    nets, y = ds.batch([3, 0, 3])
    assert nets[0] is nets[2]  # cached: fetched once
    assert y.tolist() == [ds[3][1], ds[0][1], ds[3][1]]
    dense, yd = ds.dense_batch([5, 1, 7])
    ref = to_dense_batch(ds.networks([5, 1, 7]))
    np.testing.assert_array_equal(dense.node_features, ref.node_features)
    np.testing.assert_array_equal(dense.edge_features, ref.edge_features)
    assert yd.tolist() == ds.targets[[5, 1, 7]].tolist()


def test_numpy_iterator_covers_each_network_once(zoo_path):
    ds = open_zoo(zoo_path, "train")
    seen = []
    for nets, y in iterate_batches(ds, 5, shuffle=True, seed=3, epoch=1, collate=None):
        assert len(nets) == len(y) <= 5
        seen += [ds.networks(range(len(ds))).index(n) for n in nets]
    assert sorted(seen) == list(range(len(ds)))
    a = np.concatenate(batch_indices(24, 5, shuffle=True, seed=3, epoch=1))
    assert a.tolist() == seen
    b = np.concatenate(batch_indices(24, 5, shuffle=True, seed=3, epoch=2))
    assert a.tolist() != b.tolist()
    assert [len(x) for x in batch_indices(24, 5, drop_last=True)] == [5] * 4
    dense = list(iterate_batches(ds, 10, collate="dense"))
    assert [len(b[0]) for b in dense] == [10, 10, 4]


def test_torch_dataloader_with_a_collate(zoo_path):
    import torch

    ds = open_zoo(zoo_path, "train")
    calls = []

    def collate(nets):
        calls.append(len(nets))
        return torch.stack([torch.from_numpy(n.flat()) for n in nets])

    dl = torch_dataloader(ds, batch_size=8, shuffle=True, seed=1, collate=collate)
    xs, ys = zip(*list(dl), strict=True)
    assert calls == [8, 8, 8]
    x, y = torch.cat(xs), torch.cat(ys)
    flat = {tuple(ds[i][0].flat()): ds[i][1] for i in range(len(ds))}
    assert sorted(flat.values()) == sorted(y.tolist())
    for row, label in zip(x.numpy(), y.tolist(), strict=True):
        assert flat[tuple(row)] == label
    again = torch.cat([b[1] for b in torch_dataloader(ds, 8, shuffle=True, seed=1, collate=collate)])
    assert torch.equal(again, y)


def test_concat_dataset(zoo_path):
    a, b = open_zoo(zoo_path, "val"), open_zoo(zoo_path, "test")
    c = ConcatDataset([a, b])
    assert len(c) == 16 and c.specs == a.specs
    assert c[9][0].equals(b[1][0]) and c[9][1] == b[1][1]
    assert c.targets.tolist() == a.targets.tolist() + b.targets.tolist()


def test_torch_dataloader_default_collate_is_the_backend_collate(zoo_path):
    from scalegmn.torch import to_networks

    ds = open_zoo(zoo_path, "val")
    batches = list(torch_dataloader(ds, batch_size=4))
    assert len(batches) == 2
    for k, (graphs, y) in enumerate(batches):
        nets = to_networks(graphs)
        for j, net in enumerate(nets):
            ref, label = ds[4 * k + j]
            np.testing.assert_allclose(net.flat(), ref.flat(), rtol=1e-6)
            assert y[j].item() == label


def test_numpy_iterator_default_collate_is_the_jax_collate(zoo_path):
    pytest.importorskip("scalegmn.jax", reason="the JAX backend is an optional extra of scalegmn-tasks")
    from scalegmn.weightgraph import to_graph_batch

    ds = open_zoo(zoo_path, "val")
    batches = list(iterate_batches(ds, 4))
    assert len(batches) == 2
    for k, (batch, y) in enumerate(batches):
        nets = ds.networks(range(4 * k, 4 * k + 4))
        ref = to_graph_batch(nets)
        # one architecture: the JAX collate stacks the graphs (dense layout), graph-major
        node, edge = np.asarray(batch.node_features), np.asarray(batch.edge_features)
        assert node.shape[0] == edge.shape[0] == 4
        np.testing.assert_array_equal(node.reshape(-1, node.shape[-1]), ref.node_features)
        np.testing.assert_array_equal(edge.reshape(-1, edge.shape[-1]), ref.edge_features)
        assert isinstance(y, np.ndarray) and y.tolist() == ds.targets[4 * k : 4 * k + 4].tolist()
