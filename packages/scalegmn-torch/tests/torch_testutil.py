"""Shared helpers of the scalegmn.torch tests (model wrappers, networks, comparisons).

Group elements, their action and the equivariance errors come from the public
`scalegmn.symmetry` and `scalegmn.symmetry.testing`, as users of the library test with them.
"""

from __future__ import annotations

import types
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import Tensor

from scalegmn.torch import ScaleGMN, ScaleGMNConfig, collate
from scalegmn.weightgraph import ConvLayer, DenseLayer, Network, NetworkSpec, random_network

# One case per option (with the options it needs), and the original implementation's models.
OPTION_CASES: dict[str, dict[str, object]] = {
    "symmetrize_phi": {"sign_canon": "symmetrize_phi", "bidirectional": True},
    "symmetrize_phi_readout": {"sign_canon": "symmetrize_phi", "layer_norm": True, "mlp_layers": 2},
    "io_mlps_1": {"io_mlps": 1, "bidirectional": True},
    "io_mlps_2": {"io_mlps": 2, "bidirectional": True, "message_receiver": False},
    "io_nodes": {"readout": "io_nodes", "bidirectional": True},
    "readout_io_ordered": {"readout_io": "ordered"},
    "skip_linear": {"skip_linear": True, "head": "equivariant"},
    "edge_inv_canon": {"edge_inv": "canon", "head": "equivariant", "sign_canon": "canonicalize"},
    "edge_inv_canon_sym": {"edge_inv": "canon", "bidirectional": True},
    "backward_edge_state": {"backward_edge_state": True, "bidirectional": True, "head": "equivariant"},
    "positional_features": {"positional_features": True, "io_mlps": 2, "bidirectional": True},
    "positional_features_phi": {"positional_features": True, "sign_canon": "symmetrize_phi",
                                "per_group_inv": True},
    "head_in_last_layer": {"head": "equivariant", "head_in_last_layer": True, "bidirectional": True,
                           "backward_edge_state": True, "io_mlps": 1},
    "per_group_inv": {"per_group_inv": True, "bidirectional": True},
    "per_group_inv_canon": {"per_group_inv": True, "sign_canon": "canonicalize", "mlp_layers": 0},
    "layer_dropout": {"layer_dropout": 0.5},
    "no_edge_pe": {"edge_positional_encoding": False, "head": "equivariant"},
    "mnist_like": {"symmetry": "sign", "readout": "last_layer", "message_receiver": False,
                   "skip_linear": True, "layer_norm": True, "sign_canon": "symmetrize_phi",
                   "io_mlps": 1},
    "all": {"symmetry": "hetero", "bidirectional": True, "sign_canon": "symmetrize_phi", "io_mlps": 2,
            "edge_inv": "canon", "skip_linear": True, "readout_io": "ordered",
            "backward_edge_state": True, "positional_features": True, "per_group_inv": True,
            "edge_positional_encoding": False, "layer_dropout": 0.1},
    "all_edit": {"head": "equivariant", "head_in_last_layer": True, "bidirectional": True,
                 "backward_edge_state": True, "sign_canon": "symmetrize_phi", "io_mlps": 2,
                 "edge_inv": "canon", "skip_linear": True, "positional_features": True,
                 "per_group_inv": True, "edge_positional_encoding": False},
}

DTYPES = {"float64": torch.float64, "float32": torch.float32}
RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def small_config(**kw: object) -> ScaleGMNConfig:
    """A small model configuration for tests."""
    base: dict[str, object] = {"d_hidden": 8, "n_layers": 2, "d_out": 3, "d_edge_in": 9, "mlp_hidden": 7}
    base.update(kw)
    return ScaleGMNConfig(**base)  # type: ignore[arg-type]


def make_model(cfg: ScaleGMNConfig, dtype: torch.dtype = torch.float64, seed: int = 0) -> ScaleGMN:
    """A model in eval mode with random parameters (biases too, so that no term is zero)."""
    torch.manual_seed(seed)
    m = ScaleGMN(cfg).to(dtype).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("alpha"):
                p.fill_(0.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.3)
    return m


def flatten_cnn_spec(activation: str = "relu") -> NetworkSpec:
    """A CNN whose conv map is flattened into a dense layer (edges of `h*w` weights)."""
    return NetworkSpec(
        layers=[
            ConvLayer(in_channels=1, out_channels=3, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1),
                      activation=activation),
            ConvLayer(in_channels=3, out_channels=2, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1),
                      activation=activation),
            DenseLayer(in_features=2 * 2 * 2, out_features=3, activation=activation),
            DenseLayer(in_features=3, out_features=2),
        ],
        input_shape=(1, 7, 7),
        pooling="flatten",
    )


def spec_for(kind: str, activation: str) -> NetworkSpec:
    """A small network spec: `mlp`, `cnn` (global average pooling) or `flatten`."""
    if kind == "mlp":
        return NetworkSpec.mlp([3, 5, 4, 2], activation=activation)
    if kind == "cnn":
        return NetworkSpec.small_cnn(activation=activation, channels=3, n_conv=2, image_size=8, n_classes=2)
    return flatten_cnn_spec(activation)


def nets(spec: NetworkSpec, n: int, seed: int = 0) -> list[Network]:
    """`n` random networks (float64) with visible biases."""
    return [random_network(spec, rng=seed * 1000 + k, scale=1.0) for k in range(n)]


def invariant_fn(model: ScaleGMN, dtype: torch.dtype, **collate_kw: object):
    """`Network -> numpy output` of an invariant model."""

    def f(net: Network) -> np.ndarray:
        with torch.no_grad():
            return model(collate([net], dtype, **collate_kw)).double().numpy()[0]  # type: ignore[arg-type]

    return f


def edit_fn(model: ScaleGMN, dtype: torch.dtype, **collate_kw: object):
    """`Network -> edited Network` of an equivariant model."""

    def f(net: Network) -> Network:
        with torch.no_grad():
            return model(collate([net], dtype, **collate_kw)).to_networks()[0]  # type: ignore[arg-type, union-attr]

    return f


def rel_err(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """`max|a - b| / max|b|`."""
    a = a.detach() if isinstance(a, Tensor) else a
    b = b.detach() if isinstance(b, Tensor) else b
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def naive_bidirectional(model: ScaleGMN) -> ScaleGMN:
    """Make `model`'s backward messages the naive `ReScaleEq(h_i, e_ji)` without the factor `c_ji`.

    Only for negative controls: this message is right for sign flips, wrong for scalings.
    """
    model.fused = False

    def rescale(self, hs: Tensor, ht: Tensor, y: Tensor, blk, gs, gt) -> Tensor:  # type: ignore[no-untyped-def]
        return blk.dst(F.linear(ht, self.bwd.rescale.a.weight)) * y

    for layer in model.layers:
        layer.backward_rescale = types.MethodType(rescale, layer)
    return model


def batch_tensors(batch: object) -> dict[str, Tensor]:
    """Copies of every tensor of a batch (to check that the model never writes into it)."""
    return {k: v.clone() for k, v in vars(batch).items() if isinstance(v, Tensor)}


def assert_same_tensors(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    """Bitwise equality of two tensor dicts."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def mixed_specs() -> Sequence[NetworkSpec]:
    """Architectures of different shapes for disjoint-union batches."""
    return [
        NetworkSpec.mlp([3, 5, 4, 2], activation="relu"),
        NetworkSpec.mlp([2, 6, 1], activation="tanh"),
        NetworkSpec.siren((2, 4, 4, 1)),
        NetworkSpec.small_cnn(activation="relu", channels=3, n_conv=2, image_size=8, n_classes=2),
        flatten_cnn_spec("tanh"),
    ]


# Random draws of the options (and of the older ones they combine with).
options = st.fixed_dictionaries({
    "symmetry": st.sampled_from(["auto", "hetero", "sign", "scale", "permutation", "nonzero"]),
    "sign_canon": st.sampled_from(["symmetrize", "canonicalize", "symmetrize_phi"]),
    "io_mlps": st.sampled_from([0, 1, 2]),
    "edge_inv": st.sampled_from(["mlp", "canon"]),
    "skip_linear": st.booleans(),
    "readout": st.sampled_from(["full_graph", "last_layer", "io_nodes"]),
    "readout_io": st.sampled_from(["sum", "ordered"]),
    "backward_edge_state": st.booleans(),
    "positional_features": st.booleans(),
    "per_group_inv": st.booleans(),
    "edge_positional_encoding": st.booleans(),
    "head": st.sampled_from(["invariant", "equivariant"]),
    "head_in_last_layer": st.booleans(),
    "bidirectional": st.booleans(),
    "message_receiver": st.booleans(),
    "edge_update": st.booleans(),
    "skip_connections": st.booleans(),
    "mlp_layers": st.integers(0, 2),
    "layer_norm": st.booleans(),
    "positional_encoding": st.booleans(),
})


def option_config(kw: dict, **extra: object) -> ScaleGMNConfig:
    """A valid small configuration from a draw of `options` (dropping what does not fit)."""
    kw = dict(kw, **extra)
    if kw["symmetry"] == "nonzero" and kw["sign_canon"] == "symmetrize_phi":
        kw["sign_canon"] = "symmetrize"
    kw["skip_linear"] &= kw["skip_connections"]
    kw["backward_edge_state"] &= kw["bidirectional"] and kw["edge_update"]
    kw["positional_features"] &= kw["positional_encoding"]
    kw["per_group_inv"] &= kw["symmetry"] in ("auto", "hetero")
    kw["head_in_last_layer"] &= kw["head"] == "equivariant" and kw["edge_update"]
    if kw["readout"] != "full_graph":
        kw["readout_io"] = "sum"
    return small_config(**kw, d_hidden=5, mlp_hidden=4)
