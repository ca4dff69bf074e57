"""Converters check the function they produce: a forward the layer list does not show is refused."""

from __future__ import annotations

import numpy as np
import pytest

from scalegmn.weightgraph import (
    NetworkError,
    UnsupportedLayerError,
    forward,
    from_arrays,
    from_equinox,
    from_torch,
)

torch = pytest.importorskip("torch")
nn = torch.nn


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.lin(x)


class FunctionalReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Chain(nn.Module):
    """A plain module whose forward is the straight chain of its layers."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 8)
        self.act = nn.Tanh()
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        return self.b(self.act(self.a(x)))


def _same(module: nn.Module, net, x: np.ndarray) -> None:
    with torch.no_grad():
        y = module.double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(forward(net, x), y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [Residual, FunctionalReLU])
def test_forward_not_in_the_layer_list_is_refused(cls):
    torch.manual_seed(0)
    with pytest.raises(UnsupportedLayerError, match=f"^{cls.__name__}: its forward does something the layer list"):
        from_torch(cls())


def test_functional_activation_named_is_accepted_and_exact():
    torch.manual_seed(0)
    m = FunctionalReLU()
    net = from_torch(m, activation="relu")
    _same(m, net, np.random.default_rng(1).normal(size=(5, 3)))
    # negative control: the wrong activation named is caught
    with pytest.raises(UnsupportedLayerError, match="its forward does something"):
        from_torch(m, activation="tanh")


def test_plain_chain_and_sequential_in_train_mode_are_accepted():
    torch.manual_seed(0)
    m = Chain()
    _same(m, from_torch(m), np.random.default_rng(2).normal(size=(5, 3)))
    seq = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 1)).train()
    net = from_torch(seq)  # checked in eval mode: dropout does not make it differ
    assert seq.training
    _same(seq.eval(), net, np.random.default_rng(3).normal(size=(5, 3)))


def test_constant_after_the_last_layer_becomes_the_output_offset():
    class Plus(Chain):
        def forward(self, x):
            return super().forward(x) + 0.5

    torch.manual_seed(0)
    m = Plus()
    net = from_torch(m)
    assert net.spec.output_offset == pytest.approx(0.5, abs=1e-12)
    _same(m, net, np.random.default_rng(4).normal(size=(5, 3)))


def test_global_average_pooled_cnn_needs_no_input_shape():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    net = from_torch(cnn)
    given = from_torch(cnn, input_shape=(1, 28, 28))
    assert all(np.array_equal(a, b) for a, b in zip(net.weights, given.weights, strict=True))
    assert net.spec.layers == given.spec.layers and net.spec.pooling == "global_avg"
    x = np.random.default_rng(5).normal(size=(2, 1, 28, 28))
    _same(cnn, given, x)
    # a dense layer after a flatten still needs the image size
    flat = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 1))
    with pytest.raises(UnsupportedLayerError, match=r"dense layer after a flatten .*input_shape"):
        from_torch(flat)


def test_not_a_module_and_no_arrays_give_one_line():
    with pytest.raises(UnsupportedLayerError, match=r"^from_torch expects a torch.nn.Module, got dict$"):
        from_torch({})  # type: ignore[arg-type]
    with pytest.raises(NetworkError, match=r"^from_arrays needs one weight array per layer; got none"):
        from_arrays([], [])
    with pytest.raises(NetworkError, match="2 weight arrays but 1 bias"):
        from_arrays([np.ones((2, 3)), np.ones((1, 2))], [np.ones(2)])


def test_equinox_padding_mode_the_reader_ignores_is_refused():
    jax = pytest.importorskip("jax")
    import equinox as eqx

    from scalegmn.weightgraph.convert.equinox import global_avg_pool

    k1, k2 = jax.random.split(jax.random.key(0))

    def cnn(mode: str):
        return eqx.nn.Sequential([eqx.nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode, key=k1),
                                  eqx.nn.Lambda(jax.nn.relu), eqx.nn.Lambda(global_avg_pool),
                                  eqx.nn.Linear(3, 1, key=k2)])

    net = from_equinox(cnn("ZEROS"), input_shape=(2, 6, 6))  # control: zero padding is what it reads
    assert net.spec.pooling == "global_avg"
    with pytest.raises(UnsupportedLayerError, match=r"^Sequential: its forward does something"):
        from_equinox(cnn("CIRCULAR"), input_shape=(2, 6, 6))
