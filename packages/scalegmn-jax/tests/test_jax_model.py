"""The JAX ScaleGMN: invariance/equivariance with negative controls, checkpoints, gradients."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalegmn.jax import ScaleGMN, ScaleGMNConfig, collate, load_checkpoint, save_checkpoint
from scalegmn.jax.layer import GMNLayer
from scalegmn.symmetry.testing import assert_equivariant, assert_invariant
from scalegmn.weightgraph import NetworkSpec, random_network

ACT = {"scale": "relu", "sign": "tanh", "nonzero": "identity", "auto": "relu"}


def _model(**kw):
    base = {"d_hidden": 6, "n_layers": 2, "d_out": 3, "mlp_hidden": 5}
    base.update(kw)
    return ScaleGMN(ScaleGMNConfig(**base), key=jax.random.key(0), dtype=jnp.float64)


def _spec(kind: str, act: str) -> NetworkSpec:
    if kind == "mlp":
        return NetworkSpec.mlp([2, 5, 4, 2], act)
    return NetworkSpec.small_cnn(act, channels=3, image_size=6, n_classes=2)


@settings(max_examples=12, deadline=None)
@given(
    mode=st.sampled_from(["scale", "sign", "nonzero", "auto"]),
    bidirectional=st.booleans(),
    kind=st.sampled_from(["mlp", "cnn"]),
    readout=st.sampled_from(["full_graph", "last_layer"]),
    seed=st.integers(0, 1000),
)
def test_invariant_head(mode, bidirectional, kind, readout, seed):
    spec = _spec(kind, ACT[mode])
    model = _model(symmetry=mode, bidirectional=bidirectional, readout=readout, d_edge_in=9)
    net = random_network(spec, seed)
    assert_invariant(lambda n: model(collate([n])), net, rng=seed)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_equivariant_head(bidirectional):
    spec = _spec("mlp", "relu")
    model = _model(head="equivariant", bidirectional=bidirectional, edit_alpha_init=0.5)

    def edit(n):
        b = collate([n])
        return b.to_networks(*model(b))[0]

    assert_equivariant(edit, random_network(spec, 0))


def test_permutation_mode_is_not_scale_invariant():
    """Negative control: the GMN baseline does not see through positive scalings."""
    model = _model(symmetry="permutation")
    net = random_network(_spec("mlp", "relu"), 0)
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda n: model(collate([n])), net)


class _NaiveLayer(GMNLayer):
    """A deliberately broken layer: the backward message without the correction factor c_ji."""

    def backward_rescale(self, s, e, n_src, n_dst):
        return s * self.bwd.rescale.b(e)


def _with_naive_backward(model):
    """`model` with every layer swapped for a `_NaiveLayer` holding the same parameters."""
    def naive(layer):
        broken = object.__new__(_NaiveLayer)
        for f in dataclasses.fields(layer):
            object.__setattr__(broken, f.name, getattr(layer, f.name))
        return broken

    return eqx.tree_at(lambda m: m.layers, model, tuple(naive(layer) for layer in model.layers))


def test_naive_bidirectional_message_fails_for_relu():
    """Negative control: without the correction factor ScaleGMN-B is only sign equivariant."""
    model = _model(symmetry="auto", bidirectional=True)
    relu_net = random_network(_spec("mlp", "relu"), 0)
    tanh_net = random_network(_spec("mlp", "tanh"), 0)
    assert_invariant(lambda n: model(collate([n])), relu_net)
    model = _with_naive_backward(model)
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda n: model(collate([n])), relu_net)
    assert_invariant(lambda n: model(collate([n])), tanh_net)


def test_mixed_architectures_match_separate_batches():
    model = _model(d_edge_in=9)
    nets = [random_network(_spec("mlp", "relu"), 0), random_network(_spec("cnn", "tanh"), 1),
            random_network(NetworkSpec.siren((2, 4, 1)), 2)]
    joint = np.asarray(model(collate(nets)))
    alone = np.concatenate([np.asarray(model(collate([n]))) for n in nets])
    np.testing.assert_allclose(joint, alone, rtol=1e-12, atol=1e-12)


def test_gradients_reach_every_parameter():
    model = _model(bidirectional=True, d_edge_in=1)
    nets = [random_network(_spec("mlp", "tanh"), k) for k in range(3)]
    batch = collate(nets)

    @eqx.filter_value_and_grad
    def loss(m):
        return jnp.sum(m(batch) ** 2)

    _, grads = loss(model)
    for name, g in grads.params.items():
        assert float(jnp.max(jnp.abs(g))) > 0, f"no gradient reaches {name}"


def test_dropout_needs_a_key():
    model = _model(dropout=0.5)
    b = collate([random_network(_spec("mlp", "relu"), 0)])
    np.testing.assert_array_equal(np.asarray(model(b)), np.asarray(model(b)))
    assert not np.allclose(np.asarray(model(b, key=jax.random.key(1))), np.asarray(model(b)))


def test_checkpoint_round_trip(tmp_path):
    model = _model(bidirectional=True)
    b = collate([random_network(_spec("mlp", "relu"), 0)])
    save_checkpoint(model, tmp_path / "ckpt")
    again = load_checkpoint(tmp_path / "ckpt")
    np.testing.assert_array_equal(np.asarray(model(b)), np.asarray(again(b)))
    (tmp_path / "bad").mkdir()
    with pytest.raises(ValueError, match="not found"):
        load_checkpoint(tmp_path / "bad")


def test_checkpoint_checksum_dtype_and_finiteness(tmp_path):
    from safetensors.numpy import load_file, save_file

    from scalegmn.jax import CheckpointError
    from scalegmn.weightgraph.checkpoint import CHECKSUM_FILE
    from scalegmn.weightgraph.io import sha256_file

    path = save_checkpoint(_model(), tmp_path / "ckpt")
    w = path / "model.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-3] ^= 0x55
    w.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)
    for edit, needle in ((lambda a: np.full_like(a, np.nan), "NaN"), (lambda a: a.astype(np.int32), "dtype int32")):
        path = save_checkpoint(_model(), tmp_path / "ckpt")
        load_checkpoint(path)  # control
        arrays = load_file(str(w))
        name = sorted(arrays)[0]
        arrays[name] = edit(arrays[name])
        save_file(arrays, str(w))
        (path / CHECKSUM_FILE).write_text(
            "".join(f"{sha256_file(path / n)}  {n}\n" for n in ("config.json", "model.safetensors")))
        with pytest.raises(CheckpointError, match=f"parameter {name} .*{needle}"):
            load_checkpoint(path)


def test_float32_invariance():
    model = ScaleGMN(ScaleGMNConfig(d_hidden=6, n_layers=2, d_out=3), key=jax.random.key(0))
    net = random_network(_spec("mlp", "relu"), 0, dtype=np.float32)
    assert_invariant(lambda n: model(collate([n])), net, extreme=False)


def test_bad_input_is_named():
    model = _model()
    with pytest.raises(TypeError, match="collate"):
        model([1, 2])
    with pytest.raises(TypeError, match="Network"):
        collate([np.zeros(3)])
