"""The activation registry: each entry's group, numpy, torch and equinox functions agree."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalegmn.weightgraph import (
    ACTIVATIONS,
    Activation,
    DenseLayer,
    GroupKind,
    NetworkSpec,
    UnsupportedLayerError,
    activation_group,
    forward,
    from_equinox,
    from_torch,
    get_activation,
    random_network,
    to_equinox,
    to_torch,
)
from scalegmn.weightgraph.activations import REGISTRY

torch = pytest.importorskip("torch")

NEW = ("hardtanh", "softsign", "relu6")
# a layer with non-default parameters, so that entries which read them are checked with them
LAYER = {"sine": {"w0": 7.5}, "leaky_relu": {"negative_slope": 0.2}}


def _layer(name: str) -> DenseLayer:
    return DenseLayer(in_features=1, out_features=1, activation=name, **LAYER.get(name, {}))  # type: ignore[arg-type]


def _z(seed: int = 0) -> np.ndarray:
    # wide enough that every bound (hardtanh at 1, relu6 at 6) is crossed
    return np.random.default_rng(seed).uniform(-9.0, 9.0, size=257)


def test_literal_lists_the_registry_and_validates_names():
    assert get_args(Activation) == tuple(REGISTRY) == ACTIVATIONS
    assert set(NEW) <= set(ACTIVATIONS)
    for name in NEW:
        assert DenseLayer(in_features=2, out_features=3, activation=name).activation == name  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError, match="relu7"):
        DenseLayer(in_features=2, out_features=3, activation="relu7")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown activation 'relu7'; supported: relu, .*relu6"):
        get_activation("relu7")


def test_group_kind_codes_labels_and_properties():
    assert [int(k) for k in GroupKind] == [0, 1, 2, 3]  # the codes batches store
    assert [k.label for k in GroupKind] == ["permutation", "scale", "sign", "nonzero"]
    assert all(GroupKind.from_label(k.label) is k for k in GroupKind)
    assert [k for k in GroupKind if k.continuous] == [GroupKind.SCALE, GroupKind.NONZERO]
    assert [k for k in GroupKind if k.flips] == [GroupKind.SIGN, GroupKind.NONZERO]
    with pytest.raises(ValueError, match="unknown group 'rotation'"):
        GroupKind.from_label("rotation")


def test_new_activations_have_their_groups():
    assert {a: activation_group(a) for a in NEW} == {"hardtanh": "sign", "softsign": "sign",
                                                      "relu6": "permutation"}


def _allowed(kind: GroupKind, rng: np.random.Generator) -> list[float]:
    mag = float(10 ** rng.uniform(-2, 2))
    return {GroupKind.PERMUTATION: [1.0], GroupKind.SCALE: [mag, 0.5, 3.0], GroupKind.SIGN: [-1.0, 1.0],
            GroupKind.NONZERO: [-mag, mag, -3.0]}[kind]


def _outside(kind: GroupKind) -> list[float]:
    return {GroupKind.PERMUTATION: [-1.0, 2.0, 0.5], GroupKind.SCALE: [-1.0, -2.0], GroupKind.SIGN: [2.0, 0.5, -3.0],
            GroupKind.NONZERO: []}[kind]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_group_is_what_the_function_commutes_with(name):
    """`f(q z) = q f(z)` for every q of the entry's group, and fails for q outside it."""
    entry, layer, z = get_activation(name), _layer(name), _z()
    rng = np.random.default_rng(1)
    f = lambda x: entry.apply(x, layer)  # noqa: E731
    for q in _allowed(entry.group, rng):
        np.testing.assert_allclose(f(q * z), q * f(z), rtol=1e-12, atol=1e-12 * abs(q))
    for q in _outside(entry.group):  # negative control: a multiplier the group excludes
        assert np.max(np.abs(f(q * z) - q * f(z))) > 1e-3, (name, q)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_numpy_torch_and_equinox_functions_agree(name):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    entry, layer, z = get_activation(name), _layer(name), _z(2)
    ref = entry.apply(z, layer)
    mod = entry.torch_module(layer)
    with torch.no_grad():
        y_torch = z if mod is None else mod(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(y_torch, ref, rtol=1e-12, atol=1e-14)
    y_eqx = np.asarray(entry.equinox_function(layer)(jax.numpy.asarray(z)))
    np.testing.assert_allclose(y_eqx, ref, rtol=1e-12, atol=1e-14)


def _new_activations_mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Hardtanh(), torch.nn.Linear(5, 4), torch.nn.Softsign(),
        torch.nn.Linear(4, 6), torch.nn.ReLU6(), torch.nn.Linear(6, 2),
    ).double()


def test_torch_modules_read_and_written():
    mod = _new_activations_mlp()
    with torch.no_grad():  # weights large enough that hardtanh and relu6 saturate somewhere
        for p in mod.parameters():
            p.mul_(4.0)
    net = from_torch(mod)
    assert net.spec.activations == ["hardtanh", "softsign", "relu6", "identity"]  # ReLU6 is not read as Hardtanh
    x = np.random.default_rng(0).normal(size=(16, 3))
    with torch.no_grad():
        y = mod(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(forward(net, x), y, rtol=1e-10, atol=1e-12)
    back = to_torch(net)
    assert [type(m) for m in back if not isinstance(m, torch.nn.Linear)] == [
        torch.nn.Hardtanh, torch.nn.Softsign, torch.nn.ReLU6]
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(x)).numpy(), y, rtol=1e-10, atol=1e-12)
    assert from_torch(back).equals(net)


@pytest.mark.parametrize(("bad", "needle"), [
    (torch.nn.Hardtanh(-2.0, 2.0), r"1: Hardtanh with min_val=-2.0, max_val=2.0 is not supported; hardtanh needs "
                                   r"min_val=-1.0, max_val=1.0"),
    (torch.nn.ELU(alpha=0.5), r"1: ELU with alpha=0.5 is not supported; elu needs alpha=1.0"),
    (torch.nn.GELU(approximate="tanh"), r"1: GELU with approximate='tanh' is not supported; gelu needs approximate='none'"),
])
def test_torch_modules_with_other_parameters_are_refused_by_name(bad, needle):
    with pytest.raises(UnsupportedLayerError, match=needle):
        from_torch(torch.nn.Sequential(torch.nn.Linear(3, 4), bad, torch.nn.Linear(4, 1)))


def test_equinox_functions_read_and_written():
    jax = pytest.importorskip("jax")
    import equinox as eqx

    jax.config.update("jax_enable_x64", True)
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    fns = [jax.nn.hard_tanh, jax.nn.soft_sign, jax.nn.relu6]
    model = eqx.nn.Sequential([
        eqx.nn.Linear(3, 5, key=k1, dtype="float64"), eqx.nn.Lambda(fns[0]),
        eqx.nn.Linear(5, 4, key=k2, dtype="float64"), eqx.nn.Lambda(fns[1]),
        eqx.nn.Linear(4, 6, key=k3, dtype="float64"), eqx.nn.Lambda(fns[2]),
        eqx.nn.Linear(6, 2, key=k4, dtype="float64"),
    ])
    model = jax.tree_util.tree_map(lambda a: a * 4.0 if eqx.is_array(a) else a, model)
    net = from_equinox(model)
    assert net.spec.activations == ["hardtanh", "softsign", "relu6", "identity"]
    x = np.random.default_rng(0).normal(size=(16, 3))
    y = np.stack([np.asarray(model(xi)) for xi in x])
    np.testing.assert_allclose(forward(net, x), y, rtol=1e-10, atol=1e-12)
    back = to_equinox(net)
    assert [m.fn for m in back.layers if isinstance(m, eqx.nn.Lambda)] == fns
    np.testing.assert_allclose(np.stack([np.asarray(back(xi)) for xi in x]), y, rtol=1e-10, atol=1e-12)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(NEW), st.lists(st.integers(1, 7), min_size=2, max_size=5), st.integers(0, 999))
def test_new_activations_round_trip_through_both_frameworks(name, widths, seed):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    net = random_network(NetworkSpec.mlp(widths, name), seed, scale=3.0)
    assert from_torch(to_torch(net)).equals(net)
    assert from_equinox(to_equinox(net)).equals(net)
