"""Invariance and equivariance under hidden-neuron permutations and scalings, with controls.

For an invariant model `f(g . net) == f(net)`; for the equivariant head
`g^-1 . f(g . net) == f(net)` (compared in the original frame, so that multipliers from
1e-3 to 1e3 do not hide errors in small entries). Each property has a negative control
that must fail: a model without the symmetry, or a broken bidirectional message.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_testutil import (
    DTYPES,
    RTOL,
    edit_fn,
    invariant_fn,
    make_model,
    naive_bidirectional,
    nets,
    rel_err,
    small_config,
    spec_for,
)

from scalegmn.symmetry import GroupElement, act, sample_element
from scalegmn.symmetry.testing import equivariance_error as symmetry_error
from scalegmn.torch import collate
from scalegmn.weightgraph import Network, NetworkSpec, forward

MODE_ACTIVATIONS = {
    "scale": ["relu", "leaky_relu"],
    "sign": ["tanh", "sine", "hardtanh", "softsign"],
    "nonzero": ["identity"],
    "auto": ["relu", "tanh", "identity", "gelu", "sine", "mixed", "hardtanh", "softsign", "relu6"],
    "permutation": ["relu", "tanh", "gelu", "relu6"],
}


def _spec(kind: str, activation: str) -> NetworkSpec:
    if activation == "mixed":  # one network, a different group per hidden layer
        base = NetworkSpec.mlp([3, 4, 5, 3, 2], activation="relu")
        acts = ["relu", "tanh", "identity", "identity"]
        return base.model_copy(update={"layers": [
            layer.model_copy(update={"activation": a}) for layer, a in zip(base.layers, acts, strict=True)
        ]})
    return spec_for(kind, activation)


def invariance_error(f, net: Network, element: GroupElement) -> float:  # type: ignore[no-untyped-def]
    return symmetry_error(f, net, element, "invariant")


def equivariance_error(f, net: Network, element: GroupElement) -> float:  # type: ignore[no-untyped-def]
    return symmetry_error(f, net, element, "equivariant")


cases = st.fixed_dictionaries({
    "mode": st.sampled_from(list(MODE_ACTIVATIONS)),
    "kind": st.sampled_from(["mlp", "cnn", "flatten"]),
    "bidirectional": st.booleans(),
    "dtype": st.sampled_from(list(DTYPES)),
    "dense": st.booleans(),
    "extreme": st.booleans(),
    "seed": st.integers(0, 10**6),
})


def _setup(case: dict, **cfg: object):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(case["seed"])
    activation = MODE_ACTIVATIONS[case["mode"]][case["seed"] % len(MODE_ACTIVATIONS[case["mode"]])]
    spec = _spec(case["kind"], activation)
    net = nets(spec, 1, seed=case["seed"] % 997)[0]
    element = sample_element(spec, rng, scale=case["mode"] != "permutation", extreme=case["extreme"])
    dtype = DTYPES[case["dtype"]]
    model = make_model(small_config(symmetry=case["mode"], bidirectional=case["bidirectional"], **cfg),
                       dtype, seed=case["seed"] % 1000)
    return net, element, model, dtype


@settings(max_examples=60, deadline=None)
@given(case=cases, readout=st.sampled_from(["full_graph", "last_layer"]))
def test_invariant_model_is_invariant(case: dict, readout: str) -> None:
    net, element, model, dtype = _setup(case, readout=readout)
    f = invariant_fn(model, dtype, dense=case["dense"])
    assert invariance_error(f, net, element) < RTOL[dtype]


@settings(max_examples=60, deadline=None)
@given(case=cases)
def test_equivariant_head_is_equivariant(case: dict) -> None:
    net, element, model, dtype = _setup(case, head="equivariant")
    f = edit_fn(model, dtype, dense=case["dense"])
    assert equivariance_error(f, net, element) < RTOL[dtype]


@settings(max_examples=10, deadline=None)
@given(case=cases.filter(lambda c: c["mode"] not in ("permutation",)),
       sign_canon=st.sampled_from(["canonicalize", "symmetrize"]), mlp_layers=st.sampled_from([0, 2]))
def test_other_invariant_maps_keep_the_symmetry(case: dict, sign_canon: str, mlp_layers: int) -> None:
    net, element, model, dtype = _setup(case, sign_canon=sign_canon, mlp_layers=mlp_layers,
                                        layer_norm=True, message_receiver=False)
    assert invariance_error(invariant_fn(model, dtype), net, element) < RTOL[dtype]


@pytest.mark.parametrize("dense", [True, False])
def test_hetero_batch_is_invariant_per_network(dense: bool) -> None:
    """Networks with different activations in one batch, each acted on by its own element."""
    rng = np.random.default_rng(0)
    specs = [NetworkSpec.mlp([3, 5, 4, 2], activation=a) for a in ("relu", "tanh", "identity", "gelu")]
    if not dense:
        specs += [NetworkSpec.mlp([2, 6, 1], activation="leaky_relu"), _spec("mlp", "mixed")]
    ns = [nets(s, 1, seed=k)[0] for k, s in enumerate(specs)]
    moved = [act(sample_element(n.spec, rng, extreme=True), n) for n in ns]
    for bidirectional in (False, True):
        model = make_model(small_config(bidirectional=bidirectional))
        with torch.no_grad():
            y, y2 = (model(collate(x, torch.float64, dense=dense)) for x in (ns, moved))
        assert rel_err(y2, y) < 1e-10


# ----------------------------------------------------------------------------- negative controls


@pytest.mark.parametrize("activation,bidirectional", [("relu", False), ("relu", True), ("tanh", False),
                                                      ("tanh", True)])
def test_permutation_mode_is_not_scale_or_sign_invariant(activation: str, bidirectional: bool) -> None:
    """The GMN baseline only knows permutations: valid scalings/sign flips change its output."""
    net = nets(spec_for("mlp", activation), 1)[0]
    rng = np.random.default_rng(1)
    auto = invariant_fn(make_model(small_config(bidirectional=bidirectional)), torch.float64)
    perm = invariant_fn(make_model(small_config(symmetry="permutation", bidirectional=bidirectional)),
                        torch.float64)
    only_perm = sample_element(net.spec, rng, scale=False)
    assert invariance_error(perm, net, only_perm) < 1e-10
    element = sample_element(net.spec, rng, permute=False)
    assert invariance_error(auto, net, element) < 1e-10
    assert invariance_error(perm, net, element) > 1e-4


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_naive_bidirectional_message_fails_for_scaling_only(kind: str) -> None:
    """Without the factor c_ji the backward message is right for sign flips, wrong for ReLU."""
    rng = np.random.default_rng(2)
    for activation, should_hold in (("relu", False), ("tanh", True)):
        net = nets(spec_for(kind, activation), 1)[0]
        element = sample_element(net.spec, rng)
        model = make_model(small_config(bidirectional=True))
        f = invariant_fn(model, torch.float64)
        assert invariance_error(f, net, element) < 1e-10
        g = invariant_fn(naive_bidirectional(model), torch.float64)
        err = invariance_error(g, net, element)
        assert (err < 1e-10) == should_hold, (activation, err)
        edit = make_model(small_config(bidirectional=True, head="equivariant"))
        err = equivariance_error(edit_fn(naive_bidirectional(edit), torch.float64), net, element)
        assert (err < 1e-10) == should_hold, (activation, err)


def test_element_outside_the_group_is_caught() -> None:
    """A negative multiplier on a ReLU layer is not a symmetry: the scale model's output moves."""
    rng = np.random.default_rng(3)
    net = nets(spec_for("mlp", "relu"), 1)[0]
    f = invariant_fn(make_model(small_config(symmetry="scale")), torch.float64)
    bad = sample_element(net.spec, rng, permute=False, group="nonzero")
    assert any((q < 0).any() for q in bad.multipliers)
    assert invariance_error(f, net, bad) > 1e-4


@pytest.mark.parametrize("kind", ["mlp", "cnn", "flatten"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_new_activations_keep_their_symmetry_and_only_it(kind: str, bidirectional: bool) -> None:
    """hardtanh and softsign admit sign flips, relu6 only permutations; the auto model is
    invariant to those, and (negative control) positive scalings, which are not symmetries
    of these networks, move both their function and the model's output."""
    rng = np.random.default_rng(4)
    model = make_model(small_config(bidirectional=bidirectional))
    f = invariant_fn(model, torch.float64)
    for activation in ("hardtanh", "softsign", "relu6"):
        net = nets(spec_for(kind, activation), 1, seed=5)[0]
        net = net.replace(weights=[3 * w for w in net.weights])  # past the bounds at 1 and 6
        element = sample_element(net.spec, rng, extreme=True)
        assert invariance_error(f, net, element) < 1e-10
        bad = sample_element(net.spec, rng, permute=False, extreme=True, group="scale")
        assert not bad.in_group(net.spec)
        x = np.random.default_rng(0).normal(size=(8, *net.spec.input_shape))
        assert rel_err(forward(act(bad, net), x), forward(net, x)) > 1e-3, activation
        assert invariance_error(f, net, bad) > 1e-4, activation


def test_sign_flips_of_odd_activations_fool_the_permutation_model() -> None:
    """Negative control: sign flips keep a hardtanh/softsign network's function, but the GMN
    baseline (permutations only) does not see through them."""
    rng = np.random.default_rng(6)
    auto = invariant_fn(make_model(small_config()), torch.float64)
    perm = invariant_fn(make_model(small_config(symmetry="permutation")), torch.float64)
    for activation in ("hardtanh", "softsign"):
        net = nets(spec_for("mlp", activation), 1)[0]
        flips = sample_element(net.spec, rng, permute=False)
        assert invariance_error(auto, net, flips) < 1e-10
        assert invariance_error(perm, net, flips) > 1e-4, activation
