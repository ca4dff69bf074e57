"""Canonicalisation, normalisation, and the assertion helpers (with negative controls)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalegmn.symmetry import GroupElement, act, canonicalize, normalize_inputs, sample_element
from scalegmn.symmetry.testing import (
    assert_equivariant,
    assert_invariant,
    equivariance_error,
    networks,
    specs,
)
from scalegmn.weightgraph import Network, NetworkSpec, forward, random_network

ACTS = ("relu", "leaky_relu", "tanh", "sine", "identity", "silu")


def _close(a: Network, b: Network, tol: float = 1e-9) -> bool:
    return all(
        np.allclose(x, y, rtol=tol, atol=tol * max(1.0, float(np.abs(x).max(initial=0))))
        for x, y in zip(a.weights + a.biases, b.weights + b.biases, strict=False)
    )


@settings(max_examples=30)
@given(networks(specs(activations=ACTS, kinds=("mlp", "cnn"))), st.integers(0, 999))
def test_canonicalize_keeps_function_is_idempotent_and_invariant(net, seed):
    x = np.random.default_rng(0).normal(size=(4, *net.spec.input_shape))
    c = canonicalize(net, sort=True)
    y = forward(net, x)
    assert np.max(np.abs(forward(c, x) - y)) <= 1e-9 * max(1.0, np.abs(y).max())
    assert _close(canonicalize(c, sort=True), c)
    g = sample_element(net.spec, seed, log_range=(-1, 1))
    assert _close(canonicalize(act(g, net), sort=True), c, tol=1e-7)


def test_siren_phase_canonical_range():
    spec = NetworkSpec.siren((2, 8, 8, 1))
    net = random_network(spec, 0)
    b = [np.array(v) for v in net.biases]
    b[0] = b[0] + 7 * np.pi / 30
    shifted = net.replace(biases=b)
    c = canonicalize(shifted)
    for bias in c.biases[:-1]:
        assert np.all(np.abs(bias) <= np.pi / (2 * 30) + 1e-12)
    assert np.array_equal(c.biases[-1], shifted.biases[-1])  # the output layer is never touched
    x = np.random.default_rng(0).uniform(-1, 1, (10, 2))
    np.testing.assert_allclose(forward(c, x), forward(shifted, x), atol=1e-9)


def test_normalize_inputs_respects_group():
    spec = NetworkSpec.mlp([3, 7, 5, 2], "tanh")
    net = random_network(spec, 0)
    g = sample_element(spec, 1)
    a = normalize_inputs(act(g, net))
    b = act(g, normalize_inputs(net))
    assert _close(a, b, 1e-12)
    spec = NetworkSpec.mlp([3, 7, 5, 2], "relu")
    net = random_network(spec, 0)
    g = sample_element(spec, 1, extreme=True)
    signs_only = GroupElement(g.perms, tuple(np.ones_like(q) for q in g.multipliers))
    assert _close(normalize_inputs(act(g, net)), act(signs_only, normalize_inputs(net)), 1e-9)
    for w in normalize_inputs(net).weights:
        assert np.isclose(np.sqrt(np.mean(w**2)), 1.0)


def _invariant_model(net: Network) -> np.ndarray:
    return canonicalize(net, sort=True).flat()


def _broken_model(net: Network) -> np.ndarray:
    return net.flat()  # raw parameters: not invariant


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_assert_invariant_passes_and_catches(activation):
    net = random_network(NetworkSpec.mlp([3, 6, 4, 2], activation), 0)
    assert_invariant(_invariant_model, net)
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(_broken_model, net)


def test_assertions_catch_element_outside_group():
    """Negative control: a negative multiplier on a ReLU layer is caught by the assertion."""
    spec = NetworkSpec.mlp([3, 6, 2], "relu")
    net = random_network(spec, 0)
    bad = GroupElement((np.arange(6),), (np.full(6, -1.0),))
    x = np.random.default_rng(0).normal(size=(8, 3))
    with pytest.raises(AssertionError):
        assert_invariant(lambda n: forward(n, x), net, bad)
    assert_invariant(lambda n: forward(n, x), net)


def test_assert_equivariant():
    spec = NetworkSpec.mlp([3, 6, 4, 2], "relu")
    net = random_network(spec, 0)

    def doubled(n: Network) -> Network:  # equivariant: commutes with every element
        return n.replace(weights=[2 * w for w in n.weights], biases=[2 * b for b in n.biases])

    def squared(n: Network) -> Network:  # not equivariant under scaling
        return n.replace(weights=[w * np.abs(w) for w in n.weights])

    assert_equivariant(doubled, net)
    assert equivariance_error(doubled, net, sample_element(spec, 0, extreme=True), "equivariant") < 1e-12
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(squared, net)


def test_float32_tolerance():
    net = random_network(NetworkSpec.mlp([3, 6, 2], "tanh"), 0, dtype=np.float32)
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    assert_invariant(lambda n: forward(n, x), net)
