"""torch and equinox converters: exact round trips, same function, named errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wg_strategies import arch

from scalegmn.weightgraph import (
    ConvLayer,
    UnsupportedLayerError,
    forward,
    from_equinox,
    from_torch,
    random_network,
    to_equinox,
    to_torch,
)

torch = pytest.importorskip("torch")


@settings(max_examples=30, deadline=None)
@given(arch(), st.integers(0, 999), st.sampled_from([np.float32, np.float64]))
def test_torch_round_trip_exact_and_same_function(spec, seed, dtype):
    net = random_network(spec, seed, dtype=dtype)
    mod = to_torch(net)
    back = from_torch(mod, input_shape=spec.input_shape if spec.n_conv else None)
    assert back.equals(net) and back.dtype == net.dtype
    x = np.random.default_rng(seed).normal(size=(3, *spec.input_shape)).astype(dtype)
    with torch.no_grad():
        y = mod(torch.from_numpy(x)).numpy()
    assert_same_function(y, net, x)


def assert_same_function(y: np.ndarray, net, x: np.ndarray) -> None:
    """`y` is `net`'s function at `x` to rounding.

    float64: 1e-10 relative. float32: a deep sine network (w0 up to 30) amplifies rounding
    far beyond 1e-5, so the float32 output must be as close to the float64 function of the
    same weights as the numpy float32 forward is (within a factor 4), or within 1e-5 of the
    output scale.
    """
    if net.dtype == np.float64:
        np.testing.assert_allclose(y, forward(net, x), rtol=1e-10, atol=1e-12)
        return
    ref = forward(net.astype(np.float64), x.astype(np.float64))
    err_numpy = float(np.abs(forward(net, x) - ref).max())
    err = float(np.abs(y - ref).max())
    scale = max(1.0, float(np.abs(ref).max()))
    assert err <= 4 * err_numpy + 1e-5 * scale, (err, err_numpy, scale)


def test_plain_siren_module_and_dws_convention():
    class Siren(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w0 = 30.0
            self.seq = torch.nn.ModuleList([torch.nn.Linear(2, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 1)])

        def forward(self, x):
            for k, lin in enumerate(self.seq):
                x = lin(x)
                x = torch.sin(self.w0 * x) if k < 2 else x
            return x + 0.5

    m = Siren().double()
    net = from_torch(m)
    net = type(net)(net.spec.model_copy(update={"output_offset": 0.5}), net.weights, net.biases)
    x = np.random.default_rng(0).uniform(-1, 1, (10, 2))
    with torch.no_grad():
        np.testing.assert_allclose(forward(net, x), m(torch.from_numpy(x)).numpy(), rtol=1e-10, atol=1e-12)
    assert net.spec.activations == ["sine", "sine", "identity"]


@pytest.mark.parametrize("bad", [torch.nn.BatchNorm1d(4), torch.nn.MaxPool2d(2), torch.nn.LSTM(4, 4),
                                 torch.nn.MultiheadAttention(4, 1)])
def test_unsupported_layers_are_named(bad):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), bad, torch.nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=type(bad).__name__) as err:
        from_torch(model)
    assert "supported" in str(err.value) and "1" in str(err.value)


class _Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return x + self.inner(x)


@pytest.mark.parametrize(("bad", "needle"), [
    (torch.nn.Conv1d(3, 3, 1), "Conv1d"),
    (torch.nn.Conv2d(3, 3, 3, dilation=2, padding=2), "dilation=.2, 2."),
    (torch.nn.Conv2d(3, 3, 1, groups=3), "groups=3"),
    (_Residual(), "_Residual"),
    (torch.nn.BatchNorm2d(3), "BatchNorm2d"),
])
def test_unsupported_conv_layers_are_named_with_their_path(bad, needle):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Sequential(torch.nn.ReLU(), bad),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 1))
    with pytest.raises(UnsupportedLayerError, match=needle) as err:
        from_torch(model, input_shape=(3, 6, 6))
    assert str(err.value).startswith("1.1: ") and "supported: nn.Linear" in str(err.value)


def test_unsupported_equinox_layers_are_named():
    jax = pytest.importorskip("jax")
    import equinox as eqx

    k = jax.random.key(0)
    cases = [
        (eqx.nn.Sequential([eqx.nn.Linear(3, 4, key=k), eqx.nn.LayerNorm(4), eqx.nn.Linear(4, 1, key=k)]),
         "layer 1: LayerNorm"),
        (eqx.nn.Sequential([eqx.nn.Linear(3, 4, key=k), eqx.nn.Lambda(jax.numpy.cos), eqx.nn.Linear(4, 1, key=k)]),
         r"layer 1: Lambda\(cos\)"),
        (eqx.nn.Sequential([eqx.nn.Conv2d(3, 3, 3, dilation=2, key=k)]), "layer 0: Conv2d with dilation"),
        (eqx.nn.Linear(3, 4, key=k), "Linear is not supported"),
    ]
    for model, needle in cases:
        with pytest.raises(UnsupportedLayerError, match=needle) as err:
            from_equinox(model, input_shape=(3, 8, 8))
        assert "supported: eqx.nn.MLP" in str(err.value)


def test_conv_needs_input_shape():
    with pytest.raises(UnsupportedLayerError, match="input_shape"):
        from_torch(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2, 1)))


@settings(max_examples=15, deadline=None)
@given(arch(), st.integers(0, 999))
def test_equinox_round_trip_exact_and_same_function(spec, seed):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    net = random_network(spec, seed)
    model = to_equinox(net)
    back = from_equinox(model, input_shape=spec.input_shape if spec.n_conv else None)
    # equinox stores explicit pads, so "same" and the equal explicit padding read back alike
    assert all(np.array_equal(a, b) and a.dtype == b.dtype
               for a, b in zip(back.weights + back.biases, net.weights + net.biases, strict=True))
    hw = spec.input_shape[1:]
    for la, lb in zip(back.spec.layers, spec.layers, strict=True):
        assert la.model_copy(update={"padding": (0, 0)}) == lb.model_copy(update={"padding": (0, 0)})
        if isinstance(lb, ConvLayer):
            assert la.pads(*hw) == lb.pads(*hw)
            hw = lb.output_hw(*hw)
    x = np.random.default_rng(seed).normal(size=(2, *spec.input_shape))
    y = np.stack([np.asarray(model(xi)) for xi in x])
    np.testing.assert_allclose(y, forward(net, x), rtol=1e-10, atol=1e-12)


def test_equinox_mlp():
    jax = pytest.importorskip("jax")
    import equinox as eqx

    jax.config.update("jax_enable_x64", True)
    mlp = eqx.nn.MLP(3, 2, 8, 2, activation=jax.nn.relu, key=jax.random.key(0), dtype="float64")
    net = from_equinox(mlp)
    x = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_allclose(np.stack([np.asarray(mlp(xi)) for xi in x]), forward(net, x), rtol=1e-10, atol=1e-12)


def test_import_pulls_in_neither_torch_nor_jax():
    code = "import sys, scalegmn.weightgraph; print([m for m in ('torch', 'jax') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
