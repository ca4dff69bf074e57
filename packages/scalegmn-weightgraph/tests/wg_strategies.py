"""Hypothesis strategies over architectures for the weightgraph tests."""

from __future__ import annotations

from hypothesis import strategies as st

from scalegmn.weightgraph import ACTIVATIONS, ConvLayer, DenseLayer, NetworkSpec


@st.composite
def arch(draw):
    """A random feed-forward architecture with non-default sine frequency and leaky slope."""
    spec = draw(_arch())
    extra = {"sine": {"w0": draw(st.sampled_from([1.0, 7.5, 30.0]))},
             "leaky_relu": {"negative_slope": draw(st.sampled_from([0.01, 0.2]))}}
    layers = [la.model_copy(update=extra.get(la.activation, {})) for la in spec.layers]
    return spec.model_copy(update={"layers": layers})


@st.composite
def _arch(draw):
    act = draw(st.sampled_from(ACTIVATIONS))
    if draw(st.booleans()):
        ws = draw(st.lists(st.integers(1, 64), min_size=2, max_size=6))
        return NetworkSpec.mlp(ws, act)
    size = draw(st.sampled_from([5, 7, 8]))
    c = draw(st.integers(1, 3))
    layers = []
    hw = (size, size)
    for _ in range(draw(st.integers(1, 3))):
        co = draw(st.integers(1, 6))
        conv = ConvLayer(in_channels=c, out_channels=co, kernel_size=draw(st.sampled_from([(1, 1), (3, 3), (2, 2)])),
                         stride=draw(st.sampled_from([(1, 1), (2, 2)])),
                         padding=draw(st.sampled_from(["same", (0, 0), (1, 1)])), activation=act)
        try:
            hw = conv.output_hw(*hw)
        except ValueError:
            break
        layers.append(conv)
        c = co
    if not layers:
        return NetworkSpec.mlp([3, 4, 2], act)
    pooling = draw(st.sampled_from(["global_avg", "flatten"]))
    n_in = c * hw[0] * hw[1] if pooling == "flatten" else c
    layers.append(DenseLayer(in_features=n_in, out_features=draw(st.integers(1, 4))))
    return NetworkSpec(layers=layers, input_shape=(layers[0].in_channels, size, size), pooling=pooling)
