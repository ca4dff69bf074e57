"""The dense path (networks of one shape) computes what the segment-sum path computes."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalegmn.jax import DenseGraphBatch, GraphBatch, ScaleGMN, ScaleGMNConfig, collate, forward
from scalegmn.weightgraph import NetworkSpec, random_network


def _nets(kind: str, acts: list[str], seed: int):
    if kind == "mlp":
        specs = [NetworkSpec.mlp([2, 5, 4, 2], a) for a in acts]
    else:
        specs = [NetworkSpec.small_cnn(a, channels=3, image_size=6, n_classes=2) for a in acts]
    return [random_network(s, seed + k) for k, s in enumerate(specs)]


def _both(model, nets, key=None):
    dense, union = collate(nets), collate(nets, dense=False)
    assert isinstance(dense, DenseGraphBatch) and isinstance(union, GraphBatch)
    return (forward(model.params, model.config, dense, key),
            forward(model.params, model.config, union, key), dense, union)


@settings(max_examples=10, deadline=None)
@given(
    symmetry=st.sampled_from(["auto", "scale", "sign", "permutation"]),
    bidirectional=st.booleans(),
    kind=st.sampled_from(["mlp", "cnn"]),
    readout=st.sampled_from(["full_graph", "last_layer"]),
    head=st.sampled_from(["invariant", "equivariant"]),
    message_receiver=st.booleans(),
    positional_encoding=st.booleans(),
    sign_canon=st.sampled_from(["symmetrize", "canonicalize"]),
    seed=st.integers(0, 1000),
)
def test_dense_matches_segments(symmetry, bidirectional, kind, readout, head, message_receiver,
                                positional_encoding, sign_canon, seed):
    cfg = ScaleGMNConfig(d_hidden=6, n_layers=2, d_out=3, mlp_hidden=5, symmetry=symmetry,
                         bidirectional=bidirectional, readout=readout, head=head, d_edge_in=9,
                         message_receiver=message_receiver, positional_encoding=positional_encoding,
                         sign_canon=sign_canon, layer_norm=seed % 2 == 0)
    model = ScaleGMN(cfg, key=jax.random.key(seed), dtype=jnp.float64)
    nets = _nets(kind, ["relu", "tanh", "relu"], seed)   # activations may differ in a dense batch
    d, u, dense, union = _both(model, nets)
    if head == "equivariant":
        np.testing.assert_allclose(np.asarray(d[0]).reshape(-1, 1), np.asarray(u[0]), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(d[1]).reshape(u[1].shape), np.asarray(u[1]), rtol=1e-10, atol=1e-12)
        for a, b in zip(dense.to_networks(*d), union.to_networks(*u), strict=True):
            for wa, wb in zip(a.weights, b.weights, strict=True):
                np.testing.assert_allclose(wa, wb, rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(np.asarray(d), np.asarray(u), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dense_gradients_match(bidirectional):
    cfg = ScaleGMNConfig(d_hidden=6, n_layers=2, d_out=3, bidirectional=bidirectional, d_edge_in=9)
    model = ScaleGMN(cfg, key=jax.random.key(0), dtype=jnp.float64)
    nets = _nets("cnn", ["relu", "tanh"], 0)

    def grads(batch):
        return eqx.filter_grad(lambda m: jnp.sum(forward(m.params, cfg, batch) ** 2))(model).params

    gd, gu = grads(collate(nets)), grads(collate(nets, dense=False))
    for name in gd:
        np.testing.assert_allclose(np.asarray(gd[name]), np.asarray(gu[name]), rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def test_rows_follow_the_networks():
    """Control: the comparison above can fail; swapping networks swaps the dense rows."""
    model = ScaleGMN(ScaleGMNConfig(d_hidden=6, n_layers=2, d_out=3), key=jax.random.key(0), dtype=jnp.float64)
    nets = _nets("mlp", ["relu", "tanh"], 0)
    a = np.asarray(model(collate(nets)))
    b = np.asarray(model(collate(nets[::-1])))
    assert not np.allclose(a[0], a[1])
    np.testing.assert_allclose(a, b[::-1], rtol=1e-12)


def test_collate_chooses_the_layout():
    mlp = random_network(NetworkSpec.mlp([2, 5, 2], "relu"), 0)
    other = random_network(NetworkSpec.mlp([2, 4, 2], "relu"), 1)
    assert isinstance(collate([mlp, mlp]), DenseGraphBatch)
    assert isinstance(collate([mlp, other]), GraphBatch)
    assert isinstance(collate([mlp, mlp], dense=False), GraphBatch)
    with pytest.raises(ValueError, match="one shape"):
        collate([mlp, other], dense=True)


@pytest.mark.parametrize(("bidirectional", "head", "sign_canon"), [
    (False, "invariant", "symmetrize"), (True, "invariant", "canonicalize"), (True, "equivariant", "symmetrize"),
])
def test_chunked_blocks_match_segments(monkeypatch, bidirectional, head, sign_canon):
    """Large blocks run a few networks at a time (a loop of rematerialised chunks): same values
    and gradients as the disjoint union. `CHUNK_ROWS` is lowered so that these small networks
    are chunked (1 or 2 networks per chunk)."""
    import scalegmn.jax.model as model_mod

    monkeypatch.setattr(model_mod, "CHUNK_ROWS", 20)
    cfg = ScaleGMNConfig(d_hidden=6, n_layers=2, d_out=3, bidirectional=bidirectional, head=head,
                         sign_canon=sign_canon, positional_encoding=True)
    model = ScaleGMN(cfg, key=jax.random.key(3), dtype=jnp.float64)
    nets = _nets("mlp", ["relu", "tanh", "relu", "tanh"], 3)
    dense, union = collate(nets), collate(nets, dense=False)
    assert "scan" in str(jax.make_jaxpr(lambda p: forward(p, cfg, dense))(model.params))

    def loss(params, batch):
        out = forward(params, cfg, batch)
        return sum(jnp.sum(jnp.sin(o)) for o in out) if isinstance(out, tuple) else jnp.sum(jnp.sin(out))

    (vd, gd), (vu, gu) = (jax.value_and_grad(loss)(model.params, b) for b in (dense, union))
    np.testing.assert_allclose(float(vd), float(vu), rtol=1e-10)
    for name in gd:
        np.testing.assert_allclose(np.asarray(gd[name]), np.asarray(gu[name]), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
