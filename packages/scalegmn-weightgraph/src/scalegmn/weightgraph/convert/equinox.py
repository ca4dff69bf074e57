"""equinox models to `Network` and back (jax and equinox are imported only when used).

equinox layers act on one unbatched example: `(features,)` or `(channels, height, width)`.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..activations import REGISTRY, get_activation
from ..errors import UnsupportedLayerError
from ..network import Network
from ..schemas import ConvLayer
from ._spec import build_spec
from ._verify import verify_same_function


def _equinox_activation_names() -> str:
    return ", ".join(e.equinox.replace("jax.numpy.", "jnp.").replace(f"{__name__}.", "")
                     for e in REGISTRY.values() if e.name != "identity")


SUPPORTED = (
    "eqx.nn.MLP, or eqx.nn.Sequential of eqx.nn.Linear, eqx.nn.Conv2d (dilation 1, groups 1) and "
    f"eqx.nn.Lambda holding {_equinox_activation_names()}, global_avg_pool or flatten"
)


class Sine(eqx.Module):
    """`sin(w0 * x)`, the SIREN activation (usable as `eqx.nn.MLP(activation=Sine(30.0))`)."""

    w0: float = eqx.field(static=True, default=30.0)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.sin(self.w0 * x)


class LeakyReLU(eqx.Module):
    """LeakyReLU with a given slope."""

    negative_slope: float = eqx.field(static=True, default=0.01)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.where(x >= 0, x, self.negative_slope * x)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Average a `(C, H, W)` map over space: `(C,)`."""
    return jnp.mean(x, axis=(1, 2))


def flatten(x: jax.Array) -> jax.Array:
    """Flatten a `(C, H, W)` map channel-major, as `nn.Flatten` does."""
    return jnp.reshape(x, (-1,))


def gelu_exact(x: jax.Array) -> jax.Array:
    """The exact (erf) GELU, as `torch.nn.GELU()` computes it (`jax.nn.gelu` defaults to tanh)."""
    return jax.nn.gelu(x, approximate=False)


_gelu = gelu_exact


def _identity(x: jax.Array) -> jax.Array:
    return x


def _act_name(fn: Any) -> tuple[str, dict[str, float]] | None:
    if isinstance(fn, eqx.nn.Lambda):
        fn = fn.fn
    for entry in REGISTRY.values():
        obj = entry.equinox_object()
        if entry.params and isinstance(obj, type) and isinstance(fn, obj):
            return entry.name, {p: float(getattr(fn, p)) for p in entry.params}
        if fn is obj:
            return entry.name, {}
    if fn is jax.nn.gelu:
        raise UnsupportedLayerError("jax.nn.gelu defaults to the tanh approximation; use an exact GELU lambda "
                                    "(scalegmn.weightgraph.convert.equinox.gelu_exact)")
    if fn is jax.nn.leaky_relu:
        return "leaky_relu", {"negative_slope": 0.01}
    if fn is jnp.sin:
        return "sine", {"w0": 1.0}
    if getattr(fn, "__module__", "").startswith("equinox.nn") and getattr(fn, "__name__", "") in ("<lambda>", "_identity"):
        probe = jnp.asarray([-2.0, 0.5, 3.0])
        if bool(jnp.all(fn(probe) == probe)):  # equinox's default final activation: identity
            return "identity", {}
    return None


def from_equinox(model: Any, input_shape: tuple[int, ...] | None = None) -> Network:
    """A `Network` from `eqx.nn.MLP` or an `eqx.nn.Sequential` of Linear / Conv2d / Lambda layers.

    Lambdas may hold an activation (`jax.nn.relu`, `jnp.tanh`, ..., `Sine`, `LeakyReLU`),
    `global_avg_pool` or `flatten` (from this module). The result is checked: the model
    (vmapped, in its own dtype) and the network are run on a few seeded random inputs and
    must agree to rounding.

    Args:
        model: the equinox model (it acts on one unbatched input).
        input_shape: `(C, H, W)`; needed only when a dense layer follows a flatten.

    Raises:
        UnsupportedLayerError: naming the layer index and class, or saying that the model
            computes something its layer list does not show (e.g. a padding mode).
    """
    if isinstance(model, eqx.nn.MLP):
        act = _act_name(model.activation)
        fin = _act_name(model.final_activation)
        if act is None or fin is None:
            raise UnsupportedLayerError("eqx.nn.MLP with an activation that is not in scalegmn's list")
        items: list[Any] = []
        for k, lin in enumerate(model.layers):
            items.append(lin)
            items.append(model.activation if k < len(model.layers) - 1 else model.final_activation)
    elif isinstance(model, eqx.nn.Sequential):
        items = list(model.layers)
    else:
        raise UnsupportedLayerError(f"{type(model).__name__} is not supported; supported: {SUPPORTED}")
    layers: list[dict[str, Any]] = []
    ws, bs = [], []
    pooling = None
    for k, m in enumerate(items):
        if isinstance(m, eqx.nn.Linear):
            w = np.asarray(m.weight)
            layers.append({"kind": "dense", "in_features": w.shape[1], "out_features": w.shape[0], "bias": m.bias is not None})
            ws.append(w)
            bs.append(np.asarray(m.bias) if m.bias is not None else np.zeros(w.shape[0], w.dtype))
        elif isinstance(m, eqx.nn.Conv2d):
            w = np.asarray(m.weight)
            if tuple(m.dilation) != (1, 1) or m.groups != 1:
                raise UnsupportedLayerError(
                    f"layer {k}: Conv2d with dilation={tuple(m.dilation)}, groups={m.groups}; supported: {SUPPORTED}"
                )
            (t, b), (le, r) = (tuple(int(v) for v in p) for p in m.padding)
            entry: dict[str, Any] = {"kind": "conv", "in_channels": w.shape[1], "out_channels": w.shape[0],
                                     "kernel_size": tuple(w.shape[2:]), "stride": tuple(m.stride),
                                     "bias": m.bias is not None}
            # equinox stores explicit pads: symmetric ones stay explicit, uneven ones must be "same"
            if t == b and le == r:
                entry["padding"] = (t, le)
            else:
                entry["explicit_pads"] = (t, b, le, r)
            layers.append(entry)
            ws.append(w)
            bs.append(np.asarray(m.bias).reshape(-1) if m.bias is not None else np.zeros(w.shape[0], w.dtype))
        else:
            fn = m.fn if isinstance(m, eqx.nn.Lambda) else m
            if fn is global_avg_pool:
                pooling = "global_avg"
                continue
            if fn is flatten:
                pooling = pooling or "flatten"
                continue
            act = _act_name(m)
            if act is None:
                what = type(m).__name__ if fn is m else f"Lambda({getattr(fn, '__name__', type(fn).__name__)})"
                raise UnsupportedLayerError(f"layer {k}: {what} is not supported; supported: {SUPPORTED}")
            if act[0] == "identity":
                continue
            if not layers:
                raise UnsupportedLayerError(f"layer {k}: activation before any layer")
            layers[-1]["activation"] = act[0]
            layers[-1].update(act[1])
    spec = build_spec(layers, input_shape, pooling)
    net = Network(spec, ws, bs)
    run = jax.vmap(model)
    return verify_same_function(type(model).__name__, net, lambda x: np.asarray(run(jnp.asarray(x))), net.dtype)


def to_equinox(network: Network, key: jax.Array | None = None) -> eqx.nn.Sequential:
    """An `eqx.nn.Sequential` computing the same function on one unbatched input.

    The output offset of the spec (if any) becomes a final Lambda.
    """
    spec = network.spec
    key = key if key is not None else jax.random.key(0)
    mods: list[Any] = []
    hw = spec.input_shape[1:]
    for i, (layer, w, b) in enumerate(zip(spec.layers, network.weights, network.biases, strict=True)):
        key, sub = jax.random.split(key)
        if isinstance(layer, ConvLayer):
            t, bo, le, r = layer.pads(*hw)
            m: Any = eqx.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                                   padding=((t, bo), (le, r)), use_bias=layer.bias, key=sub, dtype=w.dtype)
            m = eqx.tree_at(lambda c: c.weight, m, jnp.asarray(w))
            if layer.bias:
                m = eqx.tree_at(lambda c: c.bias, m, jnp.asarray(b).reshape(-1, 1, 1))
            hw = layer.output_hw(*hw)
        else:
            if i == spec.n_conv and i > 0:
                mods.append(eqx.nn.Lambda(global_avg_pool if spec.pooling == "global_avg" else flatten))
            m = eqx.nn.Linear(layer.in_features, layer.out_features, use_bias=layer.bias, key=sub, dtype=w.dtype)
            m = eqx.tree_at(lambda c: c.weight, m, jnp.asarray(w))
            if layer.bias:
                m = eqx.tree_at(lambda c: c.bias, m, jnp.asarray(b))
        mods.append(m)
        if layer.activation != "identity":
            mods.append(eqx.nn.Lambda(get_activation(layer.activation).equinox_function(layer)))
    if spec.output_offset:
        off = spec.output_offset
        mods.append(eqx.nn.Lambda(lambda x: x + off))
    return eqx.nn.Sequential(mods)
