"""hardtanh and softsign (odd: sign flips) and relu6 (bounded: permutations only), end to end.

Each is one entry of `scalegmn.weightgraph.activations`; here their group, the action, the
canonical form and the public strategies and assertions, each with a negative control.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from scalegmn.symmetry import act, canonicalize, group_of, sample_element
from scalegmn.symmetry.testing import assert_invariant, group_elements, networks, specs
from scalegmn.weightgraph import NetworkSpec, forward, random_network

ODD = ("hardtanh", "softsign")
NEW = (*ODD, "relu6")


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))


def _x(spec: NetworkSpec, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(16, *spec.input_shape))


def test_group_of_new_activations():
    assert [group_of(a) for a in NEW] == ["sign", "sign", "permutation"]


@pytest.mark.parametrize("name", NEW)
def test_default_strategies_draw_the_new_activations(name):
    spec = find(specs(), lambda s: name in s.activations[:-1])
    assert name in spec.activations
    net = find(networks(), lambda n: name in n.spec.activations[:-1])
    assert name in net.spec.activations


@settings(max_examples=30, deadline=None)
@given(networks(specs(activations=NEW)), st.data())
def test_action_and_canonical_form_keep_the_function(net, data):
    g = data.draw(group_elements(net.spec))
    assert g.in_group(net.spec)
    x = _x(net.spec)
    y = forward(net, x)
    assert _rel(y, forward(act(g, net), x)) < 1e-9
    assert _rel(y, forward(canonicalize(net), x)) < 1e-9
    # the canonical form does not see the element (sign flips and permutations)
    c, cg = canonicalize(net, sort=True), canonicalize(act(g, net), sort=True)
    assert _rel(c.flat(), cg.flat()) < 1e-9


@pytest.mark.parametrize("name", ODD)
def test_sign_flips_are_drawn_for_odd_activations(name):
    spec = NetworkSpec.mlp([3, 8, 6, 2], name)
    g = sample_element(spec, 0, permute=False)
    assert set(np.unique(np.concatenate(g.multipliers))) == {-1.0, 1.0}


@pytest.mark.parametrize(("name", "group"), [("hardtanh", "scale"), ("softsign", "scale"), ("relu6", "scale"),
                                             ("relu6", "sign")])
def test_elements_outside_the_group_change_the_function(name, group):
    """Negative control: positive scalings of odd bounded activations, and scalings or sign
    flips of relu6, are not symmetries: the function moves and the assertion says so."""
    spec = NetworkSpec.mlp([3, 8, 6, 2], name)
    net = random_network(spec, 0, scale=3.0)  # pre-activations past the bounds 1 and 6
    bad = sample_element(spec, 1, permute=False, group=group)
    assert not bad.in_group(spec)
    x = _x(spec)
    assert _rel(forward(net, x), forward(act(bad, net), x)) > 1e-3
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda n: forward(n, x), net, bad)
    assert_invariant(lambda n: forward(n, x), net)  # the elements of its own group pass
