"""Property-testing tools for metanetworks: hypothesis strategies and equivariance assertions.

Example:
    A user's own invariant model, tested in ten lines:

    ```python
    from hypothesis import given, settings
    from scalegmn.symmetry import canonicalize
    from scalegmn.symmetry.testing import networks, specs, assert_invariant

    def my_model(net):  # any function of canonicalised parameters is invariant
        return canonicalize(net, sort=True).flat()

    @settings(max_examples=5, deadline=None)
    @given(networks(specs(activations=("relu", "tanh"))))
    def test_my_model(net):
        assert_invariant(my_model, net)

    test_my_model()
    ```
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st
from numpy.typing import NDArray

from scalegmn.weightgraph import (
    ACTIVATIONS,
    ConvLayer,
    DenseLayer,
    Network,
    NetworkSpec,
    random_network,
)

from .action import act, act_on_graph
from .groups import GroupElement, sample_element

DEFAULT_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


@st.composite
def specs(
    draw: st.DrawFn,
    kinds: Sequence[str] = ("mlp", "cnn"),
    activations: Sequence[str] | None = None,
    depth: tuple[int, int] = (1, 4),
    width: tuple[int, int] = (1, 8),
    mixed: bool = True,
) -> NetworkSpec:
    """Strategy for architectures: MLPs and CNNs (global-average or flatten), any activation.

    Args:
        kinds: `"mlp"` and/or `"cnn"`.
        activations: hidden activations to draw from (default: all).
        depth: range of the number of layers.
        width: range of hidden widths (channels for CNNs).
        mixed: allow different activations in one network.
    """
    acts = list(activations or ACTIVATIONS)
    kind = draw(st.sampled_from(list(kinds)))
    n_layers = draw(st.integers(*depth))
    act0 = draw(st.sampled_from(acts))

    def pick() -> str:
        return draw(st.sampled_from(acts)) if mixed else act0

    if kind == "mlp":
        ws = [draw(st.integers(1, 4))] + [draw(st.integers(*width)) for _ in range(n_layers - 1)]
        ws.append(draw(st.integers(1, 4)))
        layers = [
            DenseLayer(in_features=a, out_features=b, activation=pick() if k < n_layers - 1 else "identity")  # type: ignore[arg-type]
            for k, (a, b) in enumerate(itertools.pairwise(ws))
        ]
        return NetworkSpec(layers=list[DenseLayer | ConvLayer](layers), input_shape=(ws[0],))
    n_conv = max(1, n_layers - 1)
    size = draw(st.sampled_from([4, 5, 6]))
    c = draw(st.integers(1, 3))
    layers_c: list[DenseLayer | ConvLayer] = []
    hw = (size, size)
    c_in = c
    for _ in range(n_conv):
        c_out = draw(st.integers(*width))
        k = draw(st.sampled_from([1, 3]))
        conv = ConvLayer(in_channels=c_in, out_channels=c_out, kernel_size=(k, k), padding=(k // 2, k // 2),
                         activation=pick())  # type: ignore[arg-type]
        layers_c.append(conv)
        hw = conv.output_hw(*hw)
        c_in = c_out
    pooling = draw(st.sampled_from(["global_avg", "flatten"]))
    n_in = c_in * hw[0] * hw[1] if pooling == "flatten" else c_in
    layers_c.append(DenseLayer(in_features=n_in, out_features=draw(st.integers(1, 4))))
    return NetworkSpec(layers=layers_c, input_shape=(c, size, size), pooling=pooling)  # type: ignore[arg-type]


@st.composite
def networks(
    draw: st.DrawFn,
    spec_strategy: st.SearchStrategy[NetworkSpec] | None = None,
    dtype: type | np.dtype = np.float64,
) -> Network:
    """Strategy for networks with random parameters (a spec strategy, default `specs()`)."""
    spec = draw(spec_strategy if spec_strategy is not None else specs())
    seed = draw(st.integers(0, 2**31 - 1))
    return random_network(spec, seed, dtype=dtype)


@st.composite
def group_elements(draw: st.DrawFn, spec: NetworkSpec, extreme: bool = True) -> GroupElement:
    """Strategy for elements of the symmetry group of `spec` (multipliers 1e-3..1e3 if extreme)."""
    seed = draw(st.integers(0, 2**31 - 1))
    return sample_element(spec, seed, extreme=extreme)


def to_numpy(x: Any) -> NDArray:
    """numpy view of a numpy, torch or jax array (no torch/jax import needed)."""
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "cpu"):
        x = x.cpu()
    return np.asarray(x)


def _tol(dtype: np.dtype, rtol: float | None) -> float:
    if rtol is not None:
        return rtol
    return DEFAULT_RTOL.get(np.dtype(dtype), 1e-5)


def _elements(network: Network, elements: GroupElement | Sequence[GroupElement] | None,
              rng: int | np.random.Generator, n_elements: int, extreme: bool) -> list[GroupElement]:
    if isinstance(elements, GroupElement):
        return [elements]
    if elements is not None:
        return list(elements)
    r = np.random.default_rng(rng)
    return [sample_element(network.spec, r, extreme=extreme) for _ in range(n_elements)]


def _param_arrays(out: Any) -> list[NDArray]:
    if isinstance(out, Network):
        return [to_numpy(a).astype(np.float64) for a in out.weights + out.biases]
    return [to_numpy(a).astype(np.float64) for a in out]


def equivariance_error(
    f: Callable[[Network], Any], network: Network, element: GroupElement, kind: str = "invariant"
) -> float:
    """Worst relative error of `f` under `element`.

    `kind="invariant"`: `max |f(g.n) - f(n)| / max |f(n)|`. `kind="equivariant"`: `f` returns a
    `Network` (or `(node_features, edge_features)` in the graph layout of the network's spec);
    the error is that of `g^{-1} . f(g . n)` against `f(n)`, per array relative to its
    largest entry (compared in the original frame, so extreme multipliers do not distort it).
    """
    ref = f(network)
    out = f(act(element, network))
    if kind == "invariant":
        a, b = to_numpy(ref).astype(np.float64), to_numpy(out).astype(np.float64)
        if a.shape != b.shape:
            raise ValueError(f"f returned shapes {a.shape} and {b.shape} for a network and its transform")
        return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-300)) if a.size else 0.0
    inv = element.inverse()
    if isinstance(out, Network):
        back: Any = act(inv, out)
    else:
        node, edge = (to_numpy(t) for t in out)
        back = act_on_graph(inv, (node, edge), spec=network.spec)
    worst = 0.0
    for a, b in zip(_param_arrays(ref), _param_arrays(back), strict=True):
        scale = max(float(np.max(np.abs(a))) if a.size else 0.0, 1e-300)
        if a.size:
            worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


def _assert(kind: str, f: Callable[[Network], Any], network: Network, elements: Any, rng: Any,
            n_elements: int, extreme: bool, rtol: float | None) -> None:
    tol = _tol(network.dtype, rtol)
    for k, g in enumerate(_elements(network, elements, rng, n_elements, extreme)):
        err = equivariance_error(f, network, g, kind)
        if not err <= tol:
            raise AssertionError(
                f"not {kind}: relative error {err:.3e} > tolerance {tol:.1e} ({network.dtype}) "
                f"for element {k} ({g.describe()}) on {network!r}"
            )


def assert_invariant(
    f: Callable[[Network], Any],
    network: Network,
    elements: GroupElement | Sequence[GroupElement] | None = None,
    *,
    rng: int | np.random.Generator = 0,
    n_elements: int = 4,
    extreme: bool = True,
    rtol: float | None = None,
) -> None:
    """Assert `f(g . network) == f(network)` for group elements, to a dtype tolerance.

    Args:
        f: maps a `Network` to an array (numpy, torch or jax).
        network: the input network (its dtype sets the tolerance: float64 1e-10, float32 1e-5
            relative to the output's largest entry).
        elements: elements to test (default: `n_elements` sampled from `rng`).
        rng: seed or Generator for sampling.
        n_elements: how many to sample.
        extreme: sample multipliers over 1e-3..1e3.
        rtol: override the tolerance.

    Raises:
        AssertionError: naming the worst error, the tolerance and the element.
    """
    _assert("invariant", f, network, elements, rng, n_elements, extreme, rtol)


def assert_equivariant(
    f: Callable[[Network], Any],
    network: Network,
    elements: GroupElement | Sequence[GroupElement] | None = None,
    *,
    rng: int | np.random.Generator = 0,
    n_elements: int = 4,
    extreme: bool = True,
    rtol: float | None = None,
) -> None:
    """Assert `f(g . network) == g . f(network)` (for `f` returning a `Network` or graph features).

    Arguments as `assert_invariant`; the comparison is `g^{-1} . f(g . n)` against `f(n)`.
    """
    _assert("equivariant", f, network, elements, rng, n_elements, extreme, rtol)
