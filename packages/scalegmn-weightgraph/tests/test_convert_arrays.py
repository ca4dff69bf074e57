"""State dicts, nfn arrays and the TensorFlow flat layout: exact round trips, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wg_strategies import arch

from scalegmn.weightgraph import (
    NetworkError,
    NetworkSpec,
    forward,
    from_arrays,
    from_flat,
    from_state_dict,
    parse_layout_csv,
    random_network,
    small_cnn_zoo_layout,
    to_arrays,
    to_flat,
    to_state_dict,
)


def _layout_text(rows) -> str:
    lines = ["varname,start_idx,end_idx,shape"]
    lines += [f'{r.varname},{r.start},{r.end},"{r.shape}"' for r in rows]
    return "\n".join(lines) + "\n"


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 16), min_size=2, max_size=6), st.integers(0, 999),
       st.sampled_from([np.float32, np.float64]))
def test_state_dict_and_arrays_round_trip(widths, seed, dtype):
    net = random_network(NetworkSpec.mlp(widths, "tanh"), seed, dtype=dtype)
    assert from_state_dict(to_state_dict(net), net.spec).equals(net)
    w, b = to_arrays(net)
    assert from_arrays(w, b, net.spec).equals(net)
    assert from_arrays(w, b, activation="tanh").equals(net)


def test_state_dict_errors_name_the_key():
    net = random_network(NetworkSpec.siren(), 0)
    sd = to_state_dict(net)
    del sd["seq.1.bias"]
    with pytest.raises(NetworkError, match=r"seq\.1\.bias"):
        from_state_dict(sd, net.spec)
    sd = to_state_dict(net)
    sd["seq.9.weight"] = np.zeros(1)
    with pytest.raises(NetworkError, match="unexpected"):
        from_state_dict(sd, net.spec)
    sd = to_state_dict(net)
    sd["seq.0.weight"] = np.zeros((31, 2))
    with pytest.raises(NetworkError, match="layer 0"):
        from_state_dict(sd, net.spec)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_flat_tensorflow_layout_round_trip_and_function(activation):
    spec = NetworkSpec.small_cnn(activation)
    net = random_network(spec, 0, dtype=np.float32)
    rows = parse_layout_csv(_layout_text(small_cnn_zoo_layout(spec)))
    assert rows[-1].end == 4970  # the published Small CNN Zoo row length
    v = to_flat(net, rows)
    back = from_flat(v, rows, spec)
    assert back.equals(net)
    # the TF layout is not the torch layout: reading it untransposed computes another function
    wrong = [w.reshape(w.shape[2], w.shape[3], w.shape[1], w.shape[0]) if w.ndim == 4 else w for w in net.weights]
    assert not all(np.array_equal(a, b) for a, b in zip(wrong, back.weights, strict=True))
    x = np.random.default_rng(0).normal(size=(2, 1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(forward(back, x), forward(net, x))


def test_layout_errors_name_the_row(tmp_path):
    text = _layout_text(small_cnn_zoo_layout(NetworkSpec.small_cnn()))
    bad = text.replace('"(16, 10)"', '"(16, 9)"')
    with pytest.raises(NetworkError, match="line 8"):
        parse_layout_csv(bad)
    p = tmp_path / "layout.csv"
    p.write_text(text.replace("varname", "name"))
    with pytest.raises(NetworkError, match=r"layout\.csv"):
        parse_layout_csv(p)
    rows = parse_layout_csv(text)
    with pytest.raises(NetworkError, match="needs"):
        from_flat(np.zeros(100), rows, NetworkSpec.small_cnn())


@settings(max_examples=25, deadline=None)
@given(arch(), st.integers(0, 999), st.sampled_from([np.float32, np.float64]))
def test_every_format_round_trips_random_architectures(spec, seed, dtype):
    net = random_network(spec, seed, dtype=dtype)
    rows = parse_layout_csv(_layout_text(small_cnn_zoo_layout(spec)))
    for back in (from_flat(to_flat(net, rows), rows, spec), from_state_dict(to_state_dict(net), spec),
                 from_arrays(*to_arrays(net), spec=spec)):
        assert back.equals(net) and back.dtype == net.dtype
    sd = {k.replace("seq.", "net.layers."): v for k, v in to_state_dict(net).items()}
    assert from_state_dict(sd, spec, key_format="net.layers.{i}.{param}").equals(net)


def test_state_dict_of_torch_tensors():
    torch = pytest.importorskip("torch")
    net = random_network(NetworkSpec.siren(), 0, dtype=np.float32)
    sd = {k: torch.from_numpy(v) for k, v in to_state_dict(net).items()}
    assert from_state_dict(sd, net.spec).equals(net)


def test_array_and_flat_errors_name_the_layer_or_row():
    net = random_network(NetworkSpec.mlp([3, 4, 2]), 0)
    w, b = to_arrays(net)
    with pytest.raises(NetworkError, match="layer 1 has 5 inputs"):
        from_arrays([w[0], np.zeros((2, 5))], b)
    spec = NetworkSpec.small_cnn()
    rows = small_cnn_zoo_layout(spec)
    swapped = [rows[0].__class__(rows[0].varname, rows[0].start, rows[0].end, (1, 16, 3, 3)), *rows[1:]]
    with pytest.raises(NetworkError, match=r"sequential/conv2d/kernel:0.*\(3, 3, 1, 16\)"):
        from_flat(np.zeros(rows[-1].end), swapped, spec)
    with pytest.raises(NetworkError, match="kernels"):
        from_flat(np.zeros(rows[-1].end), rows[:-2], spec)
