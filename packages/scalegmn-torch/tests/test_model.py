"""Model behaviour: shapes, heads, no writes into the input, errors, gradient flow."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_testutil import (
    assert_same_tensors,
    batch_tensors,
    make_model,
    mixed_specs,
    nets,
    rel_err,
    small_config,
    spec_for,
)

from scalegmn.torch import BatchError, DenseGraphs, ScaleGMN, SparseGraphs, collate
from scalegmn.weightgraph import NetworkSpec


@pytest.mark.parametrize("readout", ["full_graph", "last_layer"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_invariant_head_shape(readout: str, bidirectional: bool) -> None:
    m = ScaleGMN(small_config(readout=readout, bidirectional=bidirectional))
    y = m(collate(nets(spec_for("cnn", "relu"), 4)))
    assert y.shape == (4, 3) and y.dtype == torch.float32 and torch.isfinite(y).all()


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_equivariant_head_returns_decodable_graphs(layout: str) -> None:
    ns = nets(spec_for("flatten", "tanh"), 3)
    b = collate(ns, torch.float64, dense=layout == "dense")
    out = make_model(small_config(head="equivariant")).eval()(b)
    assert type(out) is type(b)
    edited = out.to_networks()
    assert [e.spec for e in edited] == [n.spec for n in ns]
    # the step is small but not zero, and padding slots stay zero
    assert 0 < max(rel_err(e.weights[0], n.weights[0]) for e, n in zip(edited, ns, strict=True)) < 10
    pad = ~b.edge_mask
    assert pad.any()
    feats = out.edge_features if layout == "sparse" else out.edge_features[0]
    assert torch.all(feats[pad] == b.edge_features[0 if layout == "dense" else slice(None)][pad])


@pytest.mark.parametrize("cfg", [
    {}, {"bidirectional": True}, {"head": "equivariant"}, {"bidirectional": True, "head": "equivariant"},
])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_model_never_writes_into_its_input(cfg: dict, layout: str) -> None:
    b = collate(nets(spec_for("mlp", "relu"), 3), torch.float64, dense=layout == "dense")
    before = batch_tensors(b)
    m = make_model(small_config(**cfg)).train()
    for _ in range(2):
        out = m(b)
        y = out if isinstance(out, torch.Tensor) else out.edge_features
        y.sum().backward()
    assert_same_tensors(before, batch_tensors(b))
    m.eval()
    first = m(b)
    second = m(b)
    if isinstance(first, torch.Tensor):
        assert torch.equal(first, second)
    else:
        assert torch.equal(first.edge_features, second.edge_features)
        assert first.edge_features is not b.edge_features


CONFIGS = [
    {},
    {"bidirectional": True},
    {"bidirectional": True, "symmetry": "permutation"},
    {"head": "equivariant"},
    {"bidirectional": True, "head": "equivariant", "sign_canon": "canonicalize"},
    {"readout": "last_layer", "mlp_layers": 2, "layer_norm": True},
    {"message_receiver": False, "mlp_layers": 0, "skip_connections": False},
]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_gradient_reaches_every_parameter(cfg: dict, layout: str) -> None:
    spec = NetworkSpec.mlp([2, 4, 3, 2], activation="relu")
    b = collate(nets(spec, 3), torch.float64, dense=layout == "dense")
    # three layers: information from every input node reaches every output node
    m = make_model(small_config(**cfg, n_layers=3))
    out = m(b)
    y = out if isinstance(out, torch.Tensor) else torch.cat([out.node_features.flatten(), out.edge_features.flatten()])
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        if name.startswith("pe_") and ("in" in name or "out" in name):
            used = p.grad.abs().sum(1) > 0
            assert used.any(), name
        else:
            assert p.grad.abs().max() > 0, name


def test_training_step_reduces_loss() -> None:
    b = collate(nets(spec_for("mlp", "tanh"), 8), torch.float64)
    target = torch.randn(8, 3, dtype=torch.float64)
    m = make_model(small_config(bidirectional=True))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = (m(b) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@settings(max_examples=8, deadline=None)
@given(cfg=st.sampled_from(CONFIGS), seed=st.integers(0, 1000))
def test_dropout_is_off_in_eval(cfg: dict, seed: int) -> None:
    b = collate(nets(spec_for("mlp", "relu"), 2, seed=seed), torch.float64)
    m = make_model(small_config(**cfg, dropout=0.5)).eval()
    out1, out2 = m(b), m(b)
    a = out1 if isinstance(out1, torch.Tensor) else out1.edge_features
    c = out2 if isinstance(out2, torch.Tensor) else out2.edge_features
    assert torch.equal(a, c)
    m.train()
    torch.manual_seed(seed)
    o3 = m(b)
    o3 = o3 if isinstance(o3, torch.Tensor) else o3.edge_features
    assert not torch.equal(a, o3)


def test_errors_are_clear() -> None:
    m = ScaleGMN(small_config())
    ns = nets(spec_for("mlp", "relu"), 2)
    with pytest.raises(TypeError, match="collate"):
        m(ns)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float64"):
        m(collate(ns, torch.float64))
    with pytest.raises(TypeError, match="ScaleGMNConfig"):
        ScaleGMN({"d_hidden": 8})  # type: ignore[arg-type]
    wide = nets(NetworkSpec.mlp([20, 3, 1]), 1)
    with pytest.raises(BatchError, match="max_in_nodes"):
        m(collate(wide))
    with pytest.raises(BatchError, match="d_edge_in"):
        ScaleGMN(small_config(d_edge_in=1))(collate(nets(spec_for("cnn", "relu"), 1)))
    with pytest.raises(BatchError, match="symmetry='auto'"):
        ScaleGMN(small_config(symmetry="scale"))(collate(nets(spec_for("mlp", "tanh"), 1)))


def test_dense_and_sparse_agree_on_mixed_architectures() -> None:
    """A disjoint-union batch of mixed architectures equals per-architecture dense batches."""
    groups = [nets(s, 2, seed=k) for k, s in enumerate(mixed_specs())]
    flat = [n for g in groups for n in g]
    for cfg in CONFIGS:
        m = make_model(small_config(**cfg))
        mixed = m(collate(flat, torch.float64))
        assert isinstance(collate(flat), SparseGraphs)
        per = [m(collate(g, torch.float64)) for g in groups]
        if isinstance(mixed, torch.Tensor):
            assert rel_err(mixed, torch.cat(per)) < 1e-12, cfg
        else:
            got = mixed.to_networks()
            want = [n for p in per for n in p.to_networks()]
            for a, b in zip(got, want, strict=True):
                for x, y in zip(a.weights + a.biases, b.weights + b.biases, strict=True):
                    assert rel_err(x, y) < 1e-12, cfg


def test_hetero_dense_batch_equals_separate_batches() -> None:
    """Networks of one shape with different activations in one dense batch."""
    shape = [3, 5, 4, 2]
    groups = [nets(NetworkSpec.mlp(shape, activation=a), 2, seed=k)
              for k, a in enumerate(["relu", "tanh", "identity", "gelu"])]
    flat = [n for g in groups for n in g]
    for cfg in CONFIGS:
        m = make_model(small_config(**cfg))
        b = collate(flat, torch.float64)
        assert isinstance(b, DenseGraphs) and None in b.layer_codes
        mixed = m(b)
        per = [m(collate(g, torch.float64)) for g in groups]
        if isinstance(mixed, torch.Tensor):
            assert rel_err(mixed, torch.cat(per)) < 1e-12, cfg
        else:
            assert rel_err(mixed.edge_features, torch.cat([p.edge_features for p in per])) < 1e-12
