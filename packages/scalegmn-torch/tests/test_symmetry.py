"""Invariance and equivariance under hidden-neuron permutations and scalings, with controls.

For an invariant model `f(g . net) == f(net)`; for the equivariant head
`g^-1 . f(g . net) == f(net)` (compared in the original frame, so that multipliers from
1e-3 to 1e3 do not hide errors in small entries). Each property has a negative control
that must fail: a model without the symmetry, or a broken bidirectional message.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_testutil import (
    DTYPES,
    OPTION_CASES,
    RTOL,
    edit_fn,
    invariant_fn,
    make_model,
    naive_bidirectional,
    nets,
    option_config,
    options,
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


# ----------------------------------------------------------------------------- the new options
# Each option keeps the symmetry (float64, 1e-10, dense and disjoint-union layouts, sign,
# scale, nonzero and mixed groups), and a broken variant of it, applied where the option
# must not be, is caught by the same check.

OPTION_NETS = [("mlp", "relu"), ("mlp", "tanh"), ("mlp", "identity"), ("mlp", "mixed"), ("cnn", "tanh"),
               ("flatten", "relu")]


def option_error(kw: dict, kind: str, activation: str, dense: bool, seed: int = 0,
                 patch=None, permute: bool = True, scale: bool = True) -> float:  # type: ignore[no-untyped-def]
    """The symmetry error of a model with options `kw` (invariance or equivariance by head).

    `patch(model)` may break the model first (negative controls)."""
    rng = np.random.default_rng(seed)
    spec = _spec(kind, activation)
    net = nets(spec, 1, seed=seed)[0]
    element = sample_element(spec, rng, extreme=True, permute=permute, scale=scale)
    model = make_model(small_config(**kw, n_layers=3), seed=seed)
    if patch is not None:
        patch(model)
    if kw.get("head") == "equivariant":
        return equivariance_error(edit_fn(model, torch.float64, dense=dense), net, element)
    return invariance_error(invariant_fn(model, torch.float64, dense=dense), net, element)


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("net_kind", OPTION_NETS, ids="-".join)
@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_each_option_keeps_the_symmetry(case: str, net_kind: tuple[str, str], dense: bool) -> None:
    kw = OPTION_CASES[case]
    kind, activation = net_kind
    if kw.get("symmetry") == "sign" and activation != "tanh":
        pytest.skip("a sign-symmetric model")
    assert option_error(kw, kind, activation, dense, seed=len(case)) < 1e-10


def _wrap(monkeypatch: pytest.MonkeyPatch, module, name: str, make):  # type: ignore[no-untyped-def]
    """Replace `module.name` by `make(original)`."""
    monkeypatch.setattr(module, name, make(getattr(module, name)))


def test_control_symmetrize_phi_with_an_odd_rho(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rho(c) - rho(-c)` instead of `rho(c) + rho(-c)`: sign flips move the output."""
    from scalegmn.torch import blocks

    kw = OPTION_CASES["symmetrize_phi"]
    assert option_error(kw, "mlp", "tanh", True) < 1e-10
    monkeypatch.setattr(blocks, "phi_even", lambda plus, minus: plus - minus)
    for dense in (True, False):
        assert option_error(kw, "mlp", "tanh", dense) > 1e-4


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_control_io_mlp_on_hidden_rows(monkeypatch: pytest.MonkeyPatch, activation: str) -> None:
    """The output nodes' io MLP used for every row that is not an input row: hidden rows
    then read their raw (not canonical) states."""
    from scalegmn.torch import blocks

    kw = OPTION_CASES["io_mlps_2"]
    assert option_error(kw, "mlp", activation, True) < 1e-10
    _wrap(monkeypatch, blocks, "general_inv", lambda f: lambda inv, x, grp, *a, io=None, **k: f(
        inv, x, dataclasses.replace(grp, out=True) if io is not None else grp, *a, io=io, **k))
    for dense in (True, False):
        assert option_error(kw, "mlp", activation, dense) > 1e-7  # 1000 times the tolerance


def test_control_edge_canon_without_the_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    """`edge_inv="canon"` without the sign canonicalisation: sign flips move the edge update."""
    from scalegmn.torch import blocks, layer

    kw = OPTION_CASES["edge_inv_canon"]
    assert option_error(kw, "mlp", "tanh", True) < 1e-10
    monkeypatch.setattr(layer, "canon_state", lambda x, grp, eps: x * (
        blocks.norm_factor(x.square().sum(-1, keepdim=True), grp, eps) if grp.any_norm else 1))
    for dense in (True, False):
        assert option_error(kw, "mlp", "tanh", dense) > 1e-4
        assert option_error(kw, "mlp", "relu", dense) < 1e-10  # the sign is what matters


def test_control_skip_linear_with_a_bias() -> None:
    """An affine (not linear) skip map breaks scale equivariance."""

    def biased(model) -> None:  # type: ignore[no-untyped-def]
        for lay in model.layers:
            w = lay.skip.weight
            lay.skip = torch.nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype)
            with torch.no_grad():
                lay.skip.weight.copy_(w)

    kw = OPTION_CASES["skip_linear"]
    for dense in (True, False):
        assert option_error(kw, "mlp", "relu", dense) < 1e-10
        assert option_error(kw, "mlp", "relu", dense, patch=biased) > 1e-4


def _hidden_as_input(model) -> None:  # type: ignore[no-untyped-def]
    """Negative control: the dense readout reads hidden states where the input nodes are."""
    run = model._run

    def wrong(h, e, grp, blocks, fused):  # type: ignore[no-untyped-def]
        h, e = run(h, e, grp, blocks, fused)
        return [h[1][:, : h[0].shape[1]], *h[1:]], e

    model._run = wrong


@pytest.mark.parametrize("case", ["io_nodes", "readout_io_ordered"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_control_ordered_readouts_on_hidden_nodes(case: str, activation: str) -> None:
    """The fixed-order readouts are only invariant on input/output nodes (trivial groups):
    fed hidden states, scalings / sign flips move them."""
    kw = OPTION_CASES[case]
    assert option_error(kw, "mlp", activation, True) < 1e-10
    assert option_error(kw, "mlp", activation, True, patch=_hidden_as_input) > 1e-4


def test_control_backward_edge_state_with_the_wrong_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backward edge update reading trivial groups: the backward state stops being
    equivariant, and the later backward messages show it."""
    from scalegmn.torch.groups import Grp
    from scalegmn.torch.layer import GMNLayer

    orig = GMNLayer.edge_inputs

    def wrong(self, hk, g, mod=None):  # type: ignore[no-untyped-def]
        return orig(self, hk, Grp(False, False) if mod is not None else g, mod)

    for head in ("invariant", "equivariant"):
        kw = {**OPTION_CASES["backward_edge_state"], "head": head}
        assert option_error(kw, "mlp", "relu", True) < 1e-10
        with monkeypatch.context() as mp:
            mp.setattr(GMNLayer, "edge_inputs", wrong)
            for dense in (True, False):
                assert option_error(kw, "mlp", "relu", dense) > 1e-4


def test_control_positional_features_per_hidden_neuron(monkeypatch: pytest.MonkeyPatch) -> None:
    """Receiver vectors that differ between the neurons of a hidden layer (instead of one
    `pe_hidden` row per layer) break permutation equivariance."""
    from scalegmn.torch import ScaleGMN

    kw = OPTION_CASES["positional_features"]
    assert option_error(kw, "mlp", "relu", True, scale=False) < 1e-10
    orig = ScaleGMN._pos_dense

    def per_neuron(self, k, L, n):  # type: ignore[no-untyped-def]
        p = orig(self, k, L, n)
        if 0 < k < L:
            p = p * torch.linspace(0.5, 2.0, n, dtype=p.dtype)[:, None]
        return p

    monkeypatch.setattr(ScaleGMN, "_pos_dense", per_neuron)
    assert option_error(kw, "mlp", "relu", True, scale=False) > 1e-4


def test_control_head_in_last_layer_without_gamma(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last layer's one-channel update must be `(gamma x) * ScaleInv(x)`: the invariant
    factor alone as the bias update is not equivariant."""
    from scalegmn.torch import blocks

    def no_gamma(f):  # type: ignore[no-untyped-def]
        def run(mod, x, grp, eps, sign_canon):  # type: ignore[no-untyped-def]
            out = f(mod, x, grp, eps, sign_canon)
            if mod.gamma.weight.shape[0] == 1:
                return out / torch.nn.functional.linear(x, mod.gamma.weight)
            return out
        return run

    kw = OPTION_CASES["head_in_last_layer"]
    for dense in (True, False):
        assert option_error(kw, "mlp", "relu", dense) < 1e-10
    _wrap(monkeypatch, blocks, "scale_eq_rows", no_gamma)
    for dense in (True, False):
        assert option_error(kw, "mlp", "relu", dense) > 1e-4


def test_control_per_group_inv_ignoring_flips(monkeypatch: pytest.MonkeyPatch) -> None:
    """Splitting the rows by normalisation only (sign rows then skip the symmetrisation)."""
    from scalegmn.torch import blocks
    from scalegmn.torch.groups import Grp

    kw = OPTION_CASES["per_group_inv"]
    assert option_error(kw, "mlp", "mixed", True) < 1e-10
    _wrap(monkeypatch, blocks, "general_inv", lambda f: lambda inv, x, grp, *a, inv_scale=None, **k: f(
        inv, x, Grp(grp.norm, False, grp.inp, grp.out, grp.pos) if inv_scale is not None else grp, *a,
        inv_scale=inv_scale, **k))
    for dense in (True, False):
        assert option_error(kw, "mlp", "mixed", dense) > 1e-7  # 1000 times the tolerance


def test_control_layer_dropout_in_training() -> None:
    """Layer dropout is exact in eval mode only: in training the same random mask falls on
    different neurons of a permuted network."""

    def training(model) -> None:  # type: ignore[no-untyped-def]
        model.train()
        fwd = model.forward

        def seeded(batch):  # type: ignore[no-untyped-def]
            torch.manual_seed(0)
            return fwd(batch)

        model.forward = seeded

    kw = OPTION_CASES["layer_dropout"]
    for dense in (True, False):
        assert option_error(kw, "mlp", "relu", dense) < 1e-10
        assert option_error(kw, "mlp", "relu", dense, patch=training, scale=False) > 1e-4


def test_control_edge_tables_per_edge_position() -> None:
    """Without edge tables nothing multiplies the edges; a multiplier that depends on the
    edge's position inside a hidden-to-hidden block breaks permutation equivariance."""

    def per_edge(model) -> None:  # type: ignore[no-untyped-def]
        run = model._run

        def wrong(h, e, grp, blocks, fused):  # type: ignore[no-untyped-def]
            e = list(e)
            e[1] = e[1] * torch.linspace(0.5, 2.0, e[1].shape[-2], dtype=e[1].dtype)[:, None]
            return run(h, e, grp, blocks, fused)

        model._run = wrong

    kw = OPTION_CASES["no_edge_pe"]
    model = make_model(small_config(**kw))
    assert not any(name.startswith("pe_edge") for name in model.state_dict())
    assert option_error(kw, "mlp", "relu", True, scale=False) < 1e-10
    assert option_error(kw, "mlp", "relu", True, patch=per_edge, scale=False) > 1e-4


OPTION_ACTIVATIONS = {"scale": ["relu"], "sign": ["tanh", "sine"], "nonzero": ["identity"],
                      "permutation": ["gelu", "relu"], "auto": ["relu", "tanh", "identity", "mixed"],
                      "hetero": ["mixed", "tanh"]}


@settings(max_examples=30, deadline=None)
@given(kw=options, kind=st.sampled_from(["mlp", "cnn", "flatten"]), dense=st.booleans(),
       seed=st.integers(0, 10**6))
def test_random_option_draws_keep_the_symmetry(kw: dict, kind: str, dense: bool, seed: int) -> None:
    cfg = option_config(kw)
    acts = OPTION_ACTIVATIONS[cfg.symmetry]
    activation = acts[seed % len(acts)]
    if activation == "mixed":
        kind = "mlp"
    rng = np.random.default_rng(seed)
    spec = _spec(kind, activation)
    net = nets(spec, 1, seed=seed % 997)[0]
    element = sample_element(spec, rng, scale=cfg.symmetry != "permutation", extreme=True)
    model = make_model(cfg, seed=seed % 1000)
    if cfg.head == "equivariant":
        assert equivariance_error(edit_fn(model, torch.float64, dense=dense), net, element) < 1e-10
    else:
        assert invariance_error(invariant_fn(model, torch.float64, dense=dense), net, element) < 1e-10
