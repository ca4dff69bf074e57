"""The JAX ScaleGMN on hardtanh, softsign (sign flips) and relu6 (permutations only) networks.

Each activation is one registry entry; the model reads its group from the batch. Negative
controls: positive scalings are no symmetry of these networks (their function and the
model's output move), and the permutation-only baseline does not see through sign flips.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalegmn.jax import ScaleGMN, ScaleGMNConfig, collate
from scalegmn.symmetry import act, sample_element
from scalegmn.symmetry.testing import assert_equivariant, assert_invariant, networks, specs
from scalegmn.weightgraph import GroupKind, NetworkSpec, forward, group_kind, random_network

NEW = ("hardtanh", "softsign", "relu6")


def _model(**kw):
    base = {"d_hidden": 6, "n_layers": 2, "d_out": 3, "mlp_hidden": 5, "d_edge_in": 9}
    base.update(kw)
    return ScaleGMN(ScaleGMNConfig(**base), key=jax.random.key(0), dtype=jnp.float64)


def _spec(kind: str, activation: str) -> NetworkSpec:
    if kind == "mlp":
        return NetworkSpec.mlp([2, 5, 4, 2], activation)
    return NetworkSpec.small_cnn(activation, channels=3, image_size=6, n_classes=2)


def test_batch_carries_the_registry_group():
    b = collate([random_network(_spec("mlp", a), 0) for a in NEW])  # one shape: a dense batch [B, N]
    hidden = np.asarray(b.node_role) == 1
    groups = [set(row[hidden].tolist()) for row in np.asarray(b.node_group)]
    assert groups == [{group_kind(a)} for a in NEW] == [{GroupKind.SIGN}, {GroupKind.SIGN}, {GroupKind.PERMUTATION}]
    assert set(np.asarray(b.node_group)[:, ~hidden].ravel().tolist()) == {GroupKind.PERMUTATION}


@settings(max_examples=6, deadline=None)
@given(networks(specs(activations=NEW, width=(1, 5), depth=(2, 3))), st.booleans(),
       st.sampled_from(["full_graph", "last_layer"]))
def test_invariant_head(net, bidirectional, readout):
    model = _model(bidirectional=bidirectional, readout=readout, d_edge_in=36)  # flattened 6x6 maps
    assert_invariant(lambda n: model(collate([n])), net)


@pytest.mark.parametrize("activation", NEW)
def test_equivariant_head(activation):
    model = _model(head="equivariant", bidirectional=True, edit_alpha_init=0.5)

    def edit(n):
        b = collate([n])
        return b.to_networks(*model(b))[0]

    assert_equivariant(edit, random_network(_spec("mlp", activation), 0))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("activation", NEW)
def test_positive_scalings_are_not_symmetries(kind, activation):
    """Negative control: a positive scaling (a symmetry of relu networks) changes these
    networks' function, and the model's output moves with it."""
    model = _model(bidirectional=True)
    spec = _spec(kind, activation)
    net = random_network(spec, 0, scale=3.0)  # pre-activations past the bounds at 1 and 6
    bad = sample_element(spec, 1, permute=False, extreme=True, group="scale")
    assert not bad.in_group(spec)
    x = np.random.default_rng(0).normal(size=(8, *spec.input_shape))
    assert np.max(np.abs(forward(act(bad, net), x) - forward(net, x))) > 1e-3
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda n: model(collate([n])), net, bad)


@pytest.mark.parametrize("activation", ["hardtanh", "softsign"])
def test_permutation_baseline_misses_sign_flips(activation):
    """Negative control: the GMN baseline is not invariant to the sign flips the auto model keeps."""
    net = random_network(_spec("mlp", activation), 0)
    flips = sample_element(net.spec, 2, permute=False)
    auto, perm = _model(), _model(symmetry="permutation")
    assert_invariant(lambda n: auto(collate([n])), net, flips)
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda n: perm(collate([n])), net, flips)
