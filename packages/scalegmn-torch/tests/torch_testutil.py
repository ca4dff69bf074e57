"""Shared helpers of the scalegmn.torch tests (model wrappers, networks, comparisons)."""

from __future__ import annotations

import types
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from scalegmn.torch import ScaleGMN, ScaleGMNConfig, collate
from scalegmn.weightgraph import ConvLayer, DenseLayer, Network, NetworkSpec, random_network

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


def net_rel_err(a: Network, b: Network) -> float:
    """Worst per-layer relative error between the parameters of two networks."""
    errs = [rel_err(x, y) for x, y in zip(a.weights + a.biases, b.weights + b.biases, strict=True)
            if np.abs(y).max() > 0]
    return max(errs)


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


# ---------------------------------------------------------------------------------------------
# Group action on networks (hidden-neuron permutations and per-neuron multipliers).
# ---------------------------------------------------------------------------------------------

GroupElement = list[tuple[np.ndarray, np.ndarray]]
"""Per hidden layer `k = 1..L-1`: `(perm, q)`; new neuron `a` is old neuron `perm[a]` times `q[a]`."""


def sample_element(spec: NetworkSpec, rng: np.random.Generator, *, permute: bool = True,
                   scale: bool = True, extreme: bool = False, group: str | None = None) -> GroupElement:
    """A random element of the symmetry group of `spec` (or of `group` for every hidden layer)."""
    from scalegmn.weightgraph import activation_group

    lo, hi = (1e-3, 1e3) if extreme else (0.2, 5.0)
    out = []
    for k, layer in enumerate(spec.layers[:-1]):
        n = spec.widths[k + 1]
        g = group or activation_group(layer.activation)
        perm = rng.permutation(n) if permute else np.arange(n)
        mag = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
        if extreme:
            mag[: min(2, n)] = [lo, hi][: min(2, n)]
        sign = rng.choice([-1.0, 1.0], n)
        q = {"scale": mag, "sign": sign, "nonzero": sign * mag}.get(g, np.ones(n)) if scale else np.ones(n)
        out.append((perm, q))
    return out


def inverse(element: GroupElement) -> GroupElement:
    """The inverse element."""
    out = []
    for perm, q in element:
        inv = np.argsort(perm)
        out.append((inv, 1.0 / q[inv]))
    return out


def act(element: GroupElement, net: Network) -> Network:
    """The action on parameters: `W_l <- Q_l P_l W_l P_{l-1}^T Q_{l-1}^{-1}`, `b_l <- Q_l P_l b_l`."""
    spec = net.spec
    ws, bs = [], []
    for i, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        w, b = np.array(w), np.array(b)
        flat = i > 0 and i == spec.n_conv and spec.pooling == "flatten"
        if flat:
            w = w.reshape(w.shape[0], spec.widths[i], -1)
        if i < spec.n_layers - 1:
            perm, q = element[i]
            w = w[perm] * q.reshape(-1, *([1] * (w.ndim - 1))).astype(w.dtype)
            b = b[perm] * q.astype(b.dtype)
        if i > 0:
            perm, q = element[i - 1]
            w = w[:, perm] / q.reshape(1, -1, *([1] * (w.ndim - 2))).astype(w.dtype)
        if flat:
            w = w.reshape(w.shape[0], -1)
        ws.append(w)
        bs.append(b)
    return Network(spec, ws, bs)
