"""Group actions keep the function; group laws; graph action agrees with parameter action."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalegmn.symmetry import (
    GroupElement,
    act,
    act_on_graph,
    all_sign_elements,
    identity_element,
    sample_element,
)
from scalegmn.symmetry.testing import networks, specs
from scalegmn.weightgraph import ACTIVATIONS, NetworkSpec, forward, random_network, to_graph


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))


def _inputs(spec: NetworkSpec, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(5, *spec.input_shape))


@settings(max_examples=40)
@given(networks(specs(activations=("relu", "leaky_relu", "tanh", "sine", "identity", "gelu"))), st.integers(0, 999))
def test_action_keeps_function(net, seed):
    g = sample_element(net.spec, seed, extreme=True)
    x = _inputs(net.spec)
    assert _rel(forward(net, x), forward(act(g, net), x)) < 1e-9


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_mlp_and_cnn(activation):
    for spec in (NetworkSpec.mlp([3, 6, 5, 2], activation), NetworkSpec.small_cnn(activation, channels=4, image_size=8)):
        net = random_network(spec, 1)
        g = sample_element(spec, 2, extreme=True)
        x = _inputs(spec)
        assert _rel(forward(net, x), forward(act(g, net), x)) < 1e-9


def test_siren_phase_keeps_function():
    spec = NetworkSpec.siren((2, 8, 8, 1))
    net = random_network(spec, 0)
    g = sample_element(spec, 3, phase=True)
    assert any(np.any(k % 2 == 1) for k in g.phases)
    x = np.random.default_rng(0).uniform(-1, 1, size=(20, 2))
    assert _rel(forward(net, x), forward(act(g, net), x)) < 1e-9


def test_phase_without_outgoing_flip_changes_function():
    """Negative control: shifting by pi/w0 without flipping the outgoing weights breaks it."""
    spec = NetworkSpec.siren((2, 8, 8, 1))
    net = random_network(spec, 0)
    b = [np.array(x) for x in net.biases]
    b[0] = b[0] + np.pi / spec.layers[0].w0
    broken = net.replace(biases=b)
    x = np.random.default_rng(0).uniform(-1, 1, size=(20, 2))
    assert _rel(forward(net, x), forward(broken, x)) > 1e-3


@settings(max_examples=25)
@given(networks(specs(activations=("relu", "tanh", "identity"))), st.integers(0, 999))
def test_graph_action_agrees(net, seed):
    g = sample_element(net.spec, seed, extreme=True)
    a = to_graph(act(g, net))
    b = act_on_graph(g, to_graph(net))
    np.testing.assert_allclose(a.node_features, b.node_features, rtol=1e-12, atol=0)
    np.testing.assert_allclose(a.edge_features, b.edge_features, rtol=1e-12, atol=0)


@settings(max_examples=25)
@given(networks(specs(activations=("relu", "tanh", "identity"))), st.integers(0, 999))
def test_group_laws(net, seed):
    rng = np.random.default_rng(seed)
    g, h, k = (sample_element(net.spec, rng) for _ in range(3))
    e = identity_element(net.spec)
    flat = net.flat()
    assert np.array_equal(act(e, net).flat(), flat)
    np.testing.assert_allclose(act(g.inverse(), act(g, net)).flat(), flat, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(act(g, act(h, net)).flat(), act(g.compose(h), net).flat(), rtol=1e-12, atol=1e-12)
    lhs = g.compose(h).compose(k)
    rhs = g.compose(h.compose(k))
    assert all(np.array_equal(a, b) for a, b in zip(lhs.perms, rhs.perms, strict=False))
    assert all(np.allclose(a, b, rtol=1e-13) for a, b in zip(lhs.multipliers, rhs.multipliers, strict=False))


def test_all_sign_elements_exhaustive():
    spec = NetworkSpec.mlp([2, 3, 2, 1], "tanh")
    net = random_network(spec, 0)
    els = list(all_sign_elements(spec))
    assert len(els) == 2**5
    x = _inputs(spec)
    for g in els:
        assert _rel(forward(net, x), forward(act(g, net), x)) < 1e-12


@pytest.mark.parametrize(
    ("activation", "q"), [("relu", -1.0), ("tanh", 2.0), ("gelu", 1.5), ("sine", 0.5)]
)
def test_element_outside_group_changes_function(activation, q):
    """Negative control: multipliers outside the group change the function."""
    spec = NetworkSpec.mlp([3, 6, 2], activation)
    net = random_network(spec, 0)
    g = GroupElement((np.arange(6),), (np.full(6, q),))
    assert not g.in_group(spec)
    x = _inputs(spec)
    assert _rel(forward(net, x), forward(act(g, net), x)) > 1e-3
