"""Model behaviour: shapes, heads, no writes into the input, errors, gradient flow."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_testutil import (
    OPTION_CASES,
    assert_same_tensors,
    batch_tensors,
    make_model,
    mixed_specs,
    nets,
    rel_err,
    small_config,
    spec_for,
)

from scalegmn.torch import BatchError, DenseGraphs, ScaleGMN, ScaleGMNConfig, SparseGraphs, collate
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


# ----------------------------------------------------------------------------- the new options

D, H, L, MAX_IN, MAX_OUT, MAX_HID, D_EDGE = 4, 3, 2, 3, 2, 2, 9


def _mlp(a: int, b: int, h: int = H) -> int:
    """Parameters of `MLP(a -> h -> b)` with one hidden layer, no LayerNorm."""
    return a * h + h + h * b + b


def _ro(a: int) -> int:
    """Parameters of the readout MLP `a -> d -> d_out` (`readout_width` is `d_hidden`)."""
    return _mlp(a, 3, D)


# option -> (its new parameter names (substrings), the change of the parameter count from
# the formulas of the options spec); base: bidirectional, message_receiver, invariant head.
PARAM_CASES: dict[str, tuple[dict, list[str], int]] = {
    "symmetrize_phi": ({"sign_canon": "symmetrize_phi"}, ["layers.0.fwd.msg.rho.lin.0.weight",
                       "layers.1.bwd.msg.rho.lin.1.bias", "layers.0.upd.rho.lin.0.weight", "readout.rho.lin.0.weight"],
                       L * (2 * _mlp(2 * D, 2 * D) + _mlp(3 * D, 3 * D)) + _mlp(D, D)),
    "io_mlps": ({"io_mlps": 2}, ["layers.0.upd.io.0.lin.0.weight", "layers.1.fwd.msg.io.1.lin.1.bias",
                "layers.0.bwd.msg.io.1.lin.0.weight"], L * 2 * (2 * _mlp(2 * D, D) + _mlp(3 * D, D))),
    "edge_inv": ({"edge_inv": "canon"}, [], -(L - 1) * _mlp(D, D)),
    "skip_linear": ({"skip_linear": True}, ["layers.0.skip.weight", "layers.1.skip.weight"], L * D * D),
    "io_nodes": ({"readout": "io_nodes"}, ["readout.proj_in.weight", "readout.proj_out.bias"],
                 (MAX_IN * D * D + D + MAX_OUT * D * D + D + _ro(2 * D)) - (_mlp(D, D) + _ro(3 * D))),
    "readout_io": ({"readout_io": "ordered"}, [], (MAX_IN + MAX_OUT - 2) * D * D),
    "backward_edge_state": ({"backward_edge_state": True}, ["layers.0.edge_bwd.gamma.weight",
                            "layers.0.edge_bwd.inv.lin.0.weight", "layers.0.edge_bwd.mlp.lin.1.bias"],
                            (L - 1) * (D * D + _mlp(D, D) + _mlp(2 * D, D))),
    "positional_features": ({"positional_features": True}, [], L * 3 * D * H),
    "per_group_inv": ({"per_group_inv": True}, ["layers.0.fwd.msg.inv_scale.lin.0.weight",
                      "layers.1.upd.inv_scale.lin.1.bias", "readout.inv_scale.lin.0.weight"],
                      L * (2 * _mlp(2 * D, D) + _mlp(3 * D, D)) + _mlp(D, D)),
    "edge_positional_encoding": ({"edge_positional_encoding": False}, [], -(MAX_IN + MAX_HID + MAX_OUT) * D),
    "layer_dropout": ({"layer_dropout": 0.3}, [], 0),
}


def _params(**kw: object) -> dict[str, int]:
    cfg = small_config(d_hidden=D, mlp_hidden=H, n_layers=L, max_in_nodes=MAX_IN, max_out_nodes=MAX_OUT,
                       max_hidden_layers=MAX_HID, d_edge_in=D_EDGE, bidirectional=True, **kw)
    return {k: v.numel() for k, v in ScaleGMN(cfg).state_dict().items()}


@pytest.mark.parametrize("case", list(PARAM_CASES))
def test_option_parameter_counts(case: str) -> None:
    """The new parameters have the spec's names and shapes (counted from its formulas)."""
    kw, names, delta = PARAM_CASES[case]
    base, new = _params(), _params(**kw)
    for name in names:
        assert name in new and name not in base, name
    assert sum(new.values()) - sum(base.values()) == delta
    if case in ("edge_inv",):
        assert not any(".edge.inv." in k for k in new)
    if case == "edge_positional_encoding":
        assert not any(k.startswith("pe_edge") for k in new)


def test_head_in_last_layer_parameter_count() -> None:
    """The last layer writes 1 node channel and `d_edge_in` edge channels; no head maps."""
    base, new = _params(head="equivariant"), _params(head="equivariant", head_in_last_layer=True)
    t = L - 1
    assert "head.node.weight" in base and "head.node.weight" not in new and "head.edge.weight" not in new
    assert "head.alpha" in new
    delta = (-D - D_EDGE * D  # head.node, head.edge
             + 3 * D * (1 - D)  # upd.gamma [1, 3d]
             + (H + 1) * (1 - D)  # upd.inv's last Linear [1, h]
             + D * (D_EDGE - D)  # edge.gamma [d_edge_in, d]
             + (H + 1) * (D_EDGE - D))  # edge.mlp's last Linear [d_edge_in, h]
    assert sum(new.values()) - sum(base.values()) == delta
    assert new[f"layers.{t}.upd.gamma.weight"] == 3 * D and new[f"layers.{t}.edge.gamma.weight"] == D_EDGE * D


def test_original_mnist_model_size() -> None:
    """The original implementation's MNIST classifier: 1,772,042 parameters there; here the
    same up to the positional tables (128 more)."""
    cfg = ScaleGMNConfig(d_hidden=128, n_layers=4, d_out=10, symmetry="sign", bidirectional=False,
                         readout="last_layer", message_receiver=False, skip_connections=True, skip_linear=True,
                         layer_norm=True, sign_canon="symmetrize_phi", io_mlps=1, mlp_layers=1, max_in_nodes=2,
                         max_out_nodes=1, max_hidden_layers=2, positional_encoding=True)
    n = sum(p.numel() for p in ScaleGMN(cfg).parameters())
    assert abs(n - 1_772_042) <= 5 * 128


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_layer_dropout_only_in_training(layout: str) -> None:
    b = collate(nets(spec_for("mlp", "relu"), 2), torch.float64, dense=layout == "dense")
    m = make_model(small_config(layer_dropout=0.5))
    assert not m.layers[0].fusable()
    assert torch.equal(m(b), m(b))
    m.train()
    torch.manual_seed(0)
    a = m(b)
    torch.manual_seed(1)
    assert not torch.equal(a, m(b))


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_new_options_turn_off_the_fused_kernels_and_train(case: str) -> None:
    """Every option: not fusable, and a gradient reaches every parameter it adds (in some
    layer: e.g. the last layer's messages to hidden nodes are not read by a `last_layer`
    readout, and forward messages never reach input nodes, so `fwd.msg.io.0` with
    `io_mlps=2` is never used)."""
    kw = OPTION_CASES[case]
    m = make_model(small_config(**kw, n_layers=3))
    assert not any(lay.fusable() for lay in m.layers)
    base = NetworkSpec.mlp([2, 4, 3, 3, 2], activation="relu")
    acts = ["tanh", "tanh", "tanh", "identity"] if kw.get("symmetry") == "sign" else ["relu", "tanh", "identity", "identity"]
    spec = base.model_copy(update={"layers": [
        layer.model_copy(update={"activation": a}) for layer, a in zip(base.layers, acts, strict=True)]})
    new = (".rho.", ".io.", "inv_scale", "skip", "edge_bwd", "proj_")
    never = {"fwd.msg.io.0", "bwd.msg.io.1"} if m.config.io_mlps == 2 else set()
    for layout in ("dense", "sparse"):
        m.zero_grad(set_to_none=True)
        out = m(collate(nets(spec, 3), torch.float64, dense=layout == "dense"))
        y = out if isinstance(out, torch.Tensor) else torch.cat([out.node_features.flatten(), out.edge_features.flatten()])
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
        reached: dict[str, bool] = {}
        for name, p in m.named_parameters():
            if any(s in name for s in new):
                key = name.split(".", 2)[2] if name.startswith("layers.") else name
                hit = p.grad is not None and bool(p.grad.abs().max() > 0)
                reached[key] = reached.get(key, False) or hit
        missed = [k for k, v in reached.items() if not v and not any(k.startswith(n) for n in never)]
        assert not missed, (layout, missed)


def test_refused_option_combinations_are_clear() -> None:
    with pytest.raises(ValueError, match="symmetrize_phi"):
        ScaleGMN(small_config(symmetry="nonzero", sign_canon="symmetrize_phi"))
    with pytest.raises(ValueError, match="edge_update=True"):
        ScaleGMN(small_config(head="equivariant", head_in_last_layer=True, edge_update=False))


@pytest.mark.parametrize("case", ["last_layer", "io_nodes", "io_nodes_bes", "mnist_like"])
def test_unread_work_is_skipped_without_changing_anything(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dense layers compute only what the head reads (`ScaleGMN._needs`): the output and
    every gradient equal those of the full computation, and fewer messages are computed."""
    from scalegmn.torch.layer import GMNLayer

    kw = {
        "last_layer": {"readout": "last_layer", "bidirectional": True},
        "io_nodes": {"readout": "io_nodes", "bidirectional": True, "skip_linear": True},
        "io_nodes_bes": {"readout": "io_nodes", "bidirectional": True, "backward_edge_state": True,
                         "layer_dropout": 0.3},
        "mnist_like": OPTION_CASES["mnist_like"],
    }[case]
    cfg = small_config(**{"edge_update": True, **kw}, n_layers=3)
    batch = collate(nets(spec_for("mlp", "tanh" if cfg.symmetry == "sign" else "relu"), 3), torch.float64)
    calls: list[int] = []
    orig = GMNLayer.message_fwd

    def counted(self, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(GMNLayer, "message_fwd", counted)

    def run(full: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        model = make_model(cfg, seed=3).train()
        model.fused = False  # count the unfused messages
        with monkeypatch.context() as mp:
            if full:
                mp.setattr(ScaleGMN, "_head_sets", lambda self, L: None)
            calls.clear()
            torch.manual_seed(0)
            y = model(batch)
            n = len(calls)
        y.square().sum().backward()
        return y.detach(), {k: p.grad for k, p in model.named_parameters() if p.grad is not None}, n

    y_full, g_full, n_full = run(True)
    y, g, n = run(False)
    assert n < n_full
    assert rel_err(y, y_full) < 1e-12
    assert g.keys() == g_full.keys()
    for k in g:
        assert rel_err(g[k], g_full[k]) < 1e-10, k
