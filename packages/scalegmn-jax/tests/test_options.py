"""The model options of `docs/model.md` (io MLPs, symmetrize_phi, ..., head in the last layer).

Per option: invariance (or equivariance) in float64 under random group elements, a negative
control that breaks the option on purpose and is caught by the same check, the parameter
count of the new names from the formulas, and the dense layout agreeing with the disjoint
union. Controls run `forward` (not compiled), so a patched function is really called.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scalegmn.jax.layer as layer_mod
import scalegmn.jax.model as model_mod
import scalegmn.jax.nn as nn_mod
from scalegmn.jax import ScaleGMN, ScaleGMNConfig, collate, forward
from scalegmn.jax.nn import Linear, ScaleEq
from scalegmn.symmetry.testing import assert_equivariant, assert_invariant
from scalegmn.weightgraph import NetworkSpec, random_network

D, H = 5, 4  # d_hidden, mlp_hidden
ACTS = ("relu", "tanh", "identity")  # scale, sign and nonzero groups under symmetry="auto"


def _cfg(**kw) -> ScaleGMNConfig:
    base = {"d_hidden": D, "n_layers": 2, "d_out": 3, "mlp_hidden": H, "symmetry": "auto"}
    base.update(kw)
    return ScaleGMNConfig(**base)


def _model(**kw) -> ScaleGMN:
    return ScaleGMN(_cfg(**kw), key=jax.random.key(0), dtype=jnp.float64)


def _net(act: str, seed: int = 0):
    return random_network(NetworkSpec.mlp([2, 5, 4, 2], act), seed)


def _count(params: dict) -> int:
    return sum(int(np.prod(v.shape)) for v in params.values())


def _mlp(a: int, b: int, h: int = H) -> int:
    """Parameters of `MLP(a -> b)` with one hidden layer of width `h`, no LayerNorm."""
    return a * h + h + h * b + b


def _check(model: ScaleGMN, act: str, compiled: bool = True, seed: int = 0) -> None:
    """Invariance (invariant head) or equivariance (equivariant head) on one network."""
    def run(n):
        b = collate([n])
        return model(b) if compiled else model.core(b)

    if model.config.head == "invariant":
        assert_invariant(run, _net(act, seed), rng=seed)
    else:
        def edit(n):
            b = collate([n])
            return b.to_networks(*run(n))[0]

        assert_equivariant(edit, _net(act, seed), rng=seed)


def _fails(model: ScaleGMN, act: str) -> None:
    kind = "invariant" if model.config.head == "invariant" else "equivariant"
    with pytest.raises(AssertionError, match=f"not {kind}"):
        _check(model, act, compiled=False)


# Each option alone (with the others at their defaults), and all together.
OPTIONS = {
    "symmetrize_phi": {"sign_canon": "symmetrize_phi"},
    "io_mlps_1": {"io_mlps": 1},
    "io_mlps_2": {"io_mlps": 2, "bidirectional": True},
    "io_nodes": {"readout": "io_nodes"},
    "ordered": {"readout_io": "ordered"},
    "skip_linear": {"skip_linear": True},
    "edge_canon": {"edge_inv": "canon"},
    "edge_canon_canonicalize": {"edge_inv": "canon", "sign_canon": "canonicalize"},
    "backward_edge_state": {"bidirectional": True, "backward_edge_state": True},
    "positional_features": {"positional_features": True, "io_mlps": 2, "bidirectional": True},
    "positional_features_phi": {"positional_features": True, "sign_canon": "symmetrize_phi"},
    "positional_features_canonicalize": {"positional_features": True, "sign_canon": "canonicalize"},
    "head_in_last_layer": {"head": "equivariant", "head_in_last_layer": True},
    "head_in_last_layer_b": {"head": "equivariant", "head_in_last_layer": True, "bidirectional": True,
                             "backward_edge_state": True, "skip_linear": True},
    "per_group_inv": {"per_group_inv": True},
    "per_group_inv_phi": {"per_group_inv": True, "sign_canon": "symmetrize_phi", "bidirectional": True},
    "layer_dropout": {"layer_dropout": 0.3},
    "no_edge_pe": {"edge_positional_encoding": False},
    "all": {"sign_canon": "symmetrize_phi", "io_mlps": 2, "readout_io": "ordered", "skip_linear": True,
            "edge_inv": "canon", "bidirectional": True, "backward_edge_state": True, "positional_features": True,
            "per_group_inv": True, "layer_dropout": 0.2, "edge_positional_encoding": False, "layer_norm": True},
    "all_equivariant": {"sign_canon": "symmetrize_phi", "io_mlps": 1, "skip_linear": True, "bidirectional": True,
                        "backward_edge_state": True, "positional_features": True, "per_group_inv": True,
                        "head": "equivariant", "head_in_last_layer": True, "edge_positional_encoding": False},
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("act", ACTS)
def test_option_keeps_the_symmetry(name, act):
    _check(_model(**OPTIONS[name]), act)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_dense_matches_segments(name):
    """Dense layout = disjoint union (1e-10), in inference and in training mode (same dropout keys)."""
    model = _model(**OPTIONS[name])
    nets = [_net(a, k) for k, a in enumerate(ACTS)]
    for key in (None, jax.random.key(1)):
        d = forward(model.params, model.config, collate(nets), key)
        u = forward(model.params, model.config, collate(nets, dense=False), key)
        for a, b in zip(d if isinstance(d, tuple) else (d,), u if isinstance(u, tuple) else (u,), strict=True):
            np.testing.assert_allclose(np.asarray(a).reshape(np.shape(b)), np.asarray(b), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["all", "io_mlps_2", "ordered", "positional_features"])
def test_option_mixed_architectures(name):
    """A union of different architectures gives each network's own output."""
    model = _model(**OPTIONS[name], d_edge_in=9)
    nets = [_net("relu", 0), random_network(NetworkSpec.small_cnn("tanh", channels=3, image_size=6, n_classes=2), 1),
            random_network(NetworkSpec.mlp([3, 4, 2], "identity"), 2)]
    joint = np.asarray(model(collate(nets)))
    alone = np.concatenate([np.asarray(model(collate([n]))) for n in nets])
    np.testing.assert_allclose(joint, alone, rtol=1e-10, atol=1e-12)
    assert_invariant(lambda n: model(collate([n])), nets[1])


def test_defaults_have_no_new_parameters():
    names = set(_model().params)
    assert not any(k in n for n in names for k in ("rho", ".io.", "inv_scale", "skip", "edge_bwd", "proj_"))


# Parameter counts of the new names, written from the formulas of docs/model.md for d=5, h=4,
# mlp_layers=1, two layers, max_in_nodes = max_out_nodes = max_hidden_layers = 16, d_out=3.
_RW, _DO, _M = D, 3, 16
COUNTS = {
    # rho: MLP(2d -> 2d) in fwd.msg and upd of both layers, MLP(d -> d) in the readout
    "symmetrize_phi": ({"sign_canon": "symmetrize_phi"}, 4 * _mlp(2 * D, 2 * D) + _mlp(D, D), ".rho."),
    # io.0, io.1: MLP(2d -> d) (messages with the receiver) and MLP(3d -> d) (bidirectional update)
    "io_mlps_2": ({"io_mlps": 2, "bidirectional": True},
                  2 * 2 * (2 * _mlp(2 * D, D) + _mlp(3 * D, D)), ".io."),
    # inv_scale shaped like inv in 4 ScaleEqs, and the readout's
    "per_group_inv": ({"per_group_inv": True}, 4 * _mlp(2 * D, D) + _mlp(D, D), "inv_scale"),
    "skip_linear": ({"skip_linear": True}, 2 * D * D, ".skip."),
    # the one edge update (layer 0) of an invariant model, doubled
    "backward_edge_state": ({"bidirectional": True, "backward_edge_state": True},
                            D * D + _mlp(D, D) + _mlp(2 * D, D), "edge_bwd"),
    "io_nodes": ({"readout": "io_nodes"}, 2 * (_M * D * D + D), "proj_"),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_new_parameter_counts(name):
    opts, expected, tag = COUNTS[name]
    base = {"bidirectional": opts.get("bidirectional", False)}
    new = {k: v for k, v in _model(**opts).params.items() if tag in k}
    old = _model(**base).params
    assert new and not any(tag in k for k in old)
    assert _count(new) == expected
    # every other parameter keeps its name and shape
    others = {k: v.shape for k, v in _model(**opts).params.items() if tag not in k}
    if name != "io_nodes":
        assert others == {k: v.shape for k, v in old.items()}


def test_changed_parameter_shapes():
    """Options that resize or remove today's parameters, from the formulas."""
    base = _model().params
    d3 = 3 * D
    p = _model(positional_features=True).params
    assert p["layers.0.fwd.msg.inv.lin.0.weight"].shape == (H, 2 * D + D)
    assert p["layers.1.upd.inv.lin.0.weight"].shape == (H, 2 * D + D)
    assert p["layers.0.fwd.msg.gamma.weight"].shape == (D, 2 * D)
    assert _count(p) - _count(base) == 4 * D * H
    p = _model(positional_features=True, sign_canon="symmetrize_phi", io_mlps=1).params
    assert p["layers.0.upd.rho.lin.0.weight"].shape == (H, 2 * D)  # rho reads x only
    assert p["layers.0.upd.io.0.lin.0.weight"].shape == (H, 3 * D)
    p = _model(readout_io="ordered").params
    assert p["readout.mlp.lin.0.weight"].shape == (_RW, D + 2 * _M * D)
    assert _count(p) - _count(base) == (D + 2 * _M * D - d3) * _RW
    p = _model(readout="io_nodes").params
    assert "readout.inv.lin.0.weight" not in p
    assert p["readout.mlp.lin.0.weight"].shape == (_RW, 2 * D)
    assert p["readout.proj_in.weight"].shape == (D, _M * D) and p["readout.proj_out.bias"].shape == (D,)
    p = _model(edge_inv="canon").params
    assert not any(".edge.inv." in k for k in p)
    assert _count(base) - _count(p) == _mlp(D, D)
    p = _model(edge_positional_encoding=False).params
    assert not any(k.startswith("pe_edge") for k in p) and "pe_hidden" in p
    assert _count(base) - _count(p) == 3 * _M * D


def test_head_in_last_layer_shapes():
    de = 9
    base = _model(head="equivariant", d_edge_in=de).params
    p = _model(head="equivariant", d_edge_in=de, head_in_last_layer=True).params
    assert "head.node.weight" not in p and "head.edge.weight" not in p and "head.alpha" in p
    assert p["layers.1.upd.gamma.weight"].shape == (1, 2 * D)
    assert p["layers.1.upd.inv.lin.1.weight"].shape == (1, H)
    assert p["layers.1.edge.gamma.weight"].shape == (de, D)
    assert p["layers.1.edge.mlp.lin.1.weight"].shape == (de, H)
    assert p["layers.1.edge.inv.lin.1.weight"].shape == (D, H)  # unchanged
    assert p["layers.0.upd.gamma.weight"].shape == (D, 2 * D)
    diff = (2 * D * (1 - D) + (H + 1) * (1 - D)  # upd: gamma, inv to 1 channel
            + D * (de - D) + (H + 1) * (de - D)  # edge: gamma, mlp to d_edge_in channels
            - D - D * de)  # no head.node, head.edge
    assert _count(p) - _count(base) == diff
    p = _model(head="equivariant", head_in_last_layer=True, skip_linear=True).params
    assert "layers.0.skip.weight" in p and "layers.1.skip.weight" not in p


def test_default_initial_values_unchanged_by_options():
    """The options' parameters draw from their own key stream: the others keep their values."""
    base = _model(bidirectional=True).params
    for opts in ({"sign_canon": "symmetrize_phi"}, {"io_mlps": 2}, {"per_group_inv": True},
                 {"skip_linear": True, "backward_edge_state": True}, {"edge_inv": "canon"},
                 {"edge_positional_encoding": False}):
        p = _model(bidirectional=True, **opts).params
        for k, v in p.items():
            if k in base:
                np.testing.assert_array_equal(np.asarray(v), np.asarray(base[k]), err_msg=f"{opts} {k}")


# Negative controls: each breaks its option in the way named and the symmetry check catches it.

def test_control_phi_antisymmetric_rho(monkeypatch):
    """`rho(c) - rho(-c)` is odd, not invariant: sign flips move the output."""
    model = _model(sign_canon="symmetrize_phi")
    _check(model, "tanh", compiled=False)
    monkeypatch.setattr(ScaleEq, "symmetric_rho", lambda self, pre, keys: self.rho.tail(pre, keys)
                        - self.rho.tail(-pre, keys))
    _fails(model, "tanh")


def test_control_io_mlp_on_hidden_rows(monkeypatch):
    """The io MLP (which reads the raw `x`) used for hidden receivers breaks the scaling symmetry."""
    model = _model(io_mlps=2)
    _check(model, "relu", compiled=False)
    monkeypatch.setattr(model_mod, "io_index", lambda cfg, role: jnp.where(role == 2, 1, 0))
    _fails(model, "relu")


@pytest.mark.parametrize("opts", [{"readout": "io_nodes"}, {"readout_io": "ordered"}])
def test_control_ordered_readout_of_hidden_nodes(monkeypatch, opts):
    """Reading the first hidden layer in order (instead of the input nodes) is not permutation invariant."""
    model = _model(**opts)
    _check(model, "relu", compiled=False)

    def hidden_in_order(self, h, n_max):
        return self._ordered(h, 1, n_max)

    monkeypatch.setattr(model_mod._Dense, "input_nodes", hidden_in_order)
    _fails(model, "relu")


def _biased(lin: Linear, seed: int) -> Linear:
    """`lin` with a random bias (an affine map: not equivariant)."""
    b = jax.random.normal(jax.random.key(seed), (lin.weight.shape[0],), lin.weight.dtype)
    return eqx.tree_at(lambda m: m.bias, lin, b, is_leaf=lambda x: x is None)


def test_control_skip_with_bias():
    model = _model(skip_linear=True)
    _check(model, "relu", compiled=False)
    model = eqx.tree_at(lambda m: m.layers[0].skip, model, _biased(model.layers[0].skip, 0))
    _fails(model, "relu")


def test_control_edge_canon_without_normalising(monkeypatch):
    """The edge update reading `h` itself (not `h / ||h||`, `s c`) is not invariant."""
    for act in ("relu", "tanh"):
        model = _model(edge_inv="canon")
        _check(model, act, compiled=False)
        with monkeypatch.context() as m:
            m.setattr(layer_mod, "sign_canonical", lambda x, g, eps: x)
            _fails(model, act)


def test_control_backward_edge_state_is_read():
    """A biased `edge_bwd.gamma` breaks the backward edge states, which the backward messages read."""
    model = _model(bidirectional=True, backward_edge_state=True, n_layers=3)
    _check(model, "relu", compiled=False)
    broken = eqx.tree_at(lambda m: m.layers[0].edge_bwd.gamma, model, _biased(model.layers[0].edge_bwd.gamma, 1))
    _fails(broken, "relu")


def test_control_positional_features_of_the_wrong_rows(monkeypatch):
    """Hidden receivers given a vector by their position in the layer: not permutation invariant."""
    model = _model(positional_features=True)
    _check(model, "relu", compiled=False)
    orig = model_mod.ScaleGMN._node_vectors

    def by_position(self, b):
        return jnp.where((b.node_role == 1)[:, None], self.pe_in[b.node_pos], orig(self, b))

    monkeypatch.setattr(model_mod.ScaleGMN, "_node_vectors", by_position)
    _fails(model, "relu")


def test_control_head_in_last_layer_biased_edge():
    model = _model(head="equivariant", head_in_last_layer=True, edit_alpha_init=0.5)
    _check(model, "relu", compiled=False)
    broken = eqx.tree_at(lambda m: m.layers[1].edge.gamma, model, _biased(model.layers[1].edge.gamma, 2))
    _fails(broken, "relu")


def test_control_per_group_inv_on_sign_rows(monkeypatch):
    """`inv_scale` (no symmetrisation) used for the sign rows too breaks sign invariance."""
    model = _model(per_group_inv=True)
    _check(model, "tanh", compiled=False)
    monkeypatch.setattr(nn_mod, "positive_scaling", lambda g: nn_mod.normalises(g) | nn_mod.flips(g))
    _fails(model, "tanh")


def test_layer_dropout_training_only():
    """Eval mode is exact (tested above); training mode drops node channels by position: a fixed
    dropout key is no symmetry of the network (the control)."""
    model = _model(layer_dropout=0.5)
    b = collate([_net("relu")])
    np.testing.assert_array_equal(np.asarray(model(b)), np.asarray(_model()(b)))  # no new parameters
    key = jax.random.key(3)
    assert not np.allclose(np.asarray(model(b, key=key)), np.asarray(model(b)))
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda n: model(collate([n]), key=key), _net("relu"))


def test_control_no_edge_pe_edges_by_position(monkeypatch):
    """Without edge tables the edges carry no per-type vector; one by source position breaks permutations."""
    model = _model(edge_positional_encoding=False)
    _check(model, "relu", compiled=False)
    orig = model_mod._Segments.edges_in

    def by_source(self, xe):
        return orig(self, xe) * (1.0 + self.b.node_pos[self.b.src])[:, None]

    monkeypatch.setattr(model_mod._Segments, "edges_in", by_source)
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda n: forward(model.params, model.config, collate([n], dense=False)), _net("relu"))


def test_refused_combinations_are_named():
    with pytest.raises(NotImplementedError, match="symmetrize_phi"):
        _model(sign_canon="symmetrize_phi", symmetry="nonzero")
    with pytest.raises(NotImplementedError, match="head_in_last_layer"):
        _model(head="equivariant", head_in_last_layer=True, edge_update=False)
