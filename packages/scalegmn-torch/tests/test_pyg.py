"""ScaleGMN as PyTorch Geometric `MessagePassing` layers on PyG batches.

The PyG path must compute the fast path's function (float64 to rounding), keep the symmetry
(with a broken layer as the negative control), train the model's own parameters, and refuse
batches that are not scalegmn graphs with one clear line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from torch_testutil import make_model, mixed_specs, nets, rel_err, small_config, spec_for

from scalegmn.symmetry import sample_element
from scalegmn.symmetry.testing import assert_equivariant, assert_invariant, networks, specs
from scalegmn.torch import (
    BatchError,
    ScaleGMN,
    ScaleGMNConfig,
    ScaleGMNConv,
    SparseGraphs,
    collate,
    from_pyg,
    to_pyg_data,
)
from scalegmn.torch.groups import Grp
from scalegmn.weightgraph import Network

F64 = torch.float64


def pyg_batch(networks: list[Network], d_edge: int | None = None) -> Batch:
    """What PyG's DataLoader builds from a list of `to_pyg_data` graphs."""
    return Batch.from_data_list([to_pyg_data(n, F64, d_edge) for n in networks])


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind,activation", [("mlp", "relu"), ("cnn", "tanh"), ("flatten", "identity")])
@pytest.mark.parametrize("head", ["invariant", "equivariant"])
def test_pyg_layers_compute_the_fast_path(bidirectional: bool, kind: str, activation: str, head: str) -> None:
    spec = spec_for(kind, activation)
    ns = nets(spec, 5)
    model = make_model(ScaleGMNConfig.for_networks(
        ns, d_hidden=8, n_layers=2, d_out=3, mlp_hidden=7, bidirectional=bidirectional, head=head))
    fast = collate(ns, F64)
    assert model.fused and all(layer.fusable() for layer in model.layers)  # the default: fused
    ref = model(fast)
    out = model.forward_pyg(pyg_batch(ns))
    if head == "invariant":
        assert rel_err(out, ref) < 1e-10
        return
    assert isinstance(ref, type(fast))
    edges, nodes = out.edge_attr.view_as(ref.edge_features), out.x.view_as(ref.node_features)
    assert rel_err(edges, ref.edge_features) < 1e-10
    assert rel_err(nodes, ref.node_features) < 1e-10
    assert rel_err(edges, fast.edge_features) > 1e-6  # the head did edit


@pytest.mark.parametrize("bidirectional", [False, True])
def test_data_loader_batches_of_mixed_architectures(bidirectional: bool) -> None:
    ns = [n for s in mixed_specs() for n in nets(s, 2)]
    cfg = ScaleGMNConfig.for_networks(ns, d_hidden=8, n_layers=3, d_out=2, bidirectional=bidirectional)
    model = make_model(cfg)
    data = [to_pyg_data(n, F64, cfg.d_edge_in) for n in ns]
    outs = [model(batch) for batch in DataLoader(data, batch_size=4)]  # forward() takes PyG too
    got = torch.cat(outs)
    per_net = torch.cat([model(collate([n], F64)) for n in ns])  # dense fast path, one by one
    assert rel_err(got, per_net) < 1e-10
    assert rel_err(model.forward_pyg(collate(ns, F64).to_pyg()), per_net) < 1e-10
    one = to_pyg_data(ns[-1], F64)  # a single Data, not a Batch
    assert rel_err(model(one), per_net[-1:]) < 1e-10


@settings(max_examples=25, deadline=None)
@given(net=networks(specs(depth=(2, 3), width=(1, 5))), bidirectional=st.booleans(), seed=st.integers(0, 99))
def test_pyg_model_is_invariant(net: Network, bidirectional: bool, seed: int) -> None:
    model = make_model(ScaleGMNConfig.for_networks([net], d_hidden=8, n_layers=2, d_out=3,
                                                   bidirectional=bidirectional), seed=seed)

    def f(n: Network) -> np.ndarray:
        with torch.no_grad():
            return model.forward_pyg(pyg_batch([n])).numpy()

    assert_invariant(f, net, rng=seed, n_elements=2)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_pyg_equivariant_head_is_equivariant(bidirectional: bool, activation: str) -> None:
    net = nets(spec_for("mlp", activation), 1)[0]
    model = make_model(small_config(head="equivariant", bidirectional=bidirectional))

    def f(n: Network) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out = model.forward_pyg(pyg_batch([n]))
        return out.x.numpy(), out.edge_attr.numpy()

    assert_equivariant(f, net, rng=1)


class _GroupBlindConv(ScaleGMNConv):
    """A broken layer for the negative control: its messages treat every node as trivial."""

    def message(self, x_i: Tensor, x_j: Tensor, y: Tensor, norm_i: Tensor, flip_i: Tensor,
                norm_j: Tensor, flip_j: Tensor, n_fwd: int) -> Tensor:
        zi, zj = torch.zeros_like(norm_i), torch.zeros_like(norm_j)
        return super().message(x_i, x_j, y, zi, zi, zj, zj, n_fwd)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_negative_control_a_group_blind_layer_is_caught(bidirectional: bool, activation: str) -> None:
    net = nets(spec_for("mlp", activation), 1)[0]
    model = make_model(small_config(bidirectional=bidirectional))
    model.__dict__["_convs"] = [_GroupBlindConv(layer) for layer in model.layers]
    assert all(isinstance(c, _GroupBlindConv) for c in model.pyg_convs())

    def f(n: Network) -> np.ndarray:
        with torch.no_grad():
            return model.forward_pyg(pyg_batch([n])).numpy()

    only_perm = sample_element(net.spec, 0, scale=False)
    assert_invariant(f, net, only_perm)  # still permutation invariant
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(f, net, sample_element(net.spec, 0, extreme=True))


def test_pyg_layers_share_and_train_the_models_parameters() -> None:
    model = make_model(small_config(bidirectional=True))
    keys = set(model.state_dict())
    convs = model.pyg_convs()
    assert [c.layer for c in convs] == list(model.layers)
    out = model.forward_pyg(pyg_batch(nets(spec_for("mlp", "relu"), 3)))
    out.square().sum().backward()
    assert set(model.state_dict()) == keys  # checkpoint names unchanged
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    assert model.pyg_convs() is convs


def test_standalone_conv_has_its_own_parameters() -> None:
    cfg = ScaleGMNConfig(d_hidden=8, bidirectional=True)
    conv = ScaleGMNConv(cfg).double()
    assert {n.split(".")[1] for n, _ in conv.named_parameters()} == {"fwd", "bwd", "upd", "edge"}
    x, e = torch.randn(5, 8, dtype=F64), torch.randn(4, 8, dtype=F64)
    edge_index = torch.tensor([[0, 1, 2, 3], [2, 2, 4, 4]])
    h, e2 = conv(x, edge_index, e, torch.tensor([0, 0, 1, 1, 0]))
    assert h.shape == (5, 8) and e2.shape == (4, 8)
    # node 2 has scale group: the layer is equivariant to scaling it (and its edges)
    q = 7.0
    xs, es = x.clone(), e.clone()
    xs[2] *= q
    es[:2] *= q  # edges into node 2
    es[2] /= q  # edge out of node 2
    h2, e3 = conv(xs, edge_index, es, torch.tensor([0, 0, 1, 1, 0]))
    assert rel_err(h2[2], q * h[2]) < 1e-10 and rel_err(h2[4], h[4]) < 1e-10
    assert rel_err(e3[:2], q * e2[:2]) < 1e-10 and rel_err(e3[2], e2[2] / q) < 1e-10


def test_pyg_errors_are_one_clear_line() -> None:
    ns = nets(spec_for("mlp", "relu"), 2)
    batch = pyg_batch(ns)
    del batch.node_group
    with pytest.raises(BatchError, match=r"lacks the field.*node_group.*to_pyg_data"):
        from_pyg(batch)
    with pytest.raises(BatchError, match="nodes per graph"):
        from_pyg(Batch.from_data_list([to_pyg_data(ns[0])]).update({"spec": [ns[0].spec] * 2}))
    with pytest.raises(BatchError, match="d_edge=1 is smaller"):
        to_pyg_data(nets(spec_for("cnn", "relu"), 1)[0], d_edge=1)
    with pytest.raises(ValueError, match=r"d_hidden=8 .* width 8"):
        ScaleGMNConv(small_config())(torch.zeros(3, 1), torch.zeros(2, 0, dtype=torch.long),
                                     torch.zeros(0, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="GMNLayer or a ScaleGMNConfig"):
        ScaleGMNConv(ScaleGMN(small_config()))  # type: ignore[arg-type]
    b = from_pyg(pyg_batch(ns))
    assert isinstance(b, SparseGraphs) and len(b) == 2 and b.edge_ptr.tolist()[-1] == b.edge_index.shape[1]


def test_group_masks_follow_the_codes() -> None:
    g = Grp.from_codes(torch.tensor([[0], [1], [2], [3]]), F64)
    assert isinstance(g.norm, torch.Tensor) and g.norm.flatten().tolist() == [0, 1, 0, 1]


PYG_OPTIONS = ["symmetrize_phi", "edge_inv_canon", "skip_linear", "io_nodes", "readout_io_ordered",
               "per_group_inv", "layer_dropout", "no_edge_pe", "edge_inv_canon_sym"]


@pytest.mark.parametrize("case", PYG_OPTIONS)
def test_pyg_layers_compute_the_new_options(case: str) -> None:
    """The options that need no per-row roles or second edge state run on PyG batches."""
    from torch_testutil import OPTION_CASES

    ns = [nets(s, 1, seed=k)[0] for k, s in enumerate(mixed_specs())]
    kw = {**OPTION_CASES[case]}
    if kw.get("readout") == "io_nodes":
        ns = [n for n in ns if n.spec.widths[-1] == 2]
    model = make_model(small_config(**kw))
    ref = model(collate(ns, F64))
    out = model.forward_pyg(pyg_batch(ns, d_edge=9))
    if isinstance(ref, Tensor):
        assert rel_err(out, ref) < 1e-10
    else:
        assert rel_err(out.edge_attr, ref.edge_features) < 1e-10


def test_pyg_head_in_last_layer() -> None:
    ns = nets(spec_for("mlp", "relu"), 3)
    model = make_model(small_config(head="equivariant", head_in_last_layer=True, bidirectional=True))
    ref = model(collate(ns, F64, dense=False))
    out = model.forward_pyg(pyg_batch(ns))
    assert rel_err(out.edge_attr, ref.edge_features) < 1e-10
    assert rel_err(out.x, ref.node_features) < 1e-10


@pytest.mark.parametrize("option", [{"io_mlps": 1}, {"positional_features": True},
                                    {"backward_edge_state": True, "bidirectional": True}])
def test_pyg_refuses_options_it_does_not_carry(option: dict) -> None:
    model = make_model(small_config(**option))
    name = next(iter(option))
    with pytest.raises(ValueError, match=name):
        model.forward_pyg(pyg_batch(nets(spec_for("mlp", "relu"), 2), d_edge=9))
    with pytest.raises(ValueError, match=name):
        ScaleGMNConv(small_config(**option))
