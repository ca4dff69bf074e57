"""The building blocks of ScaleGMN as equinox modules, mirroring `scalegmn.torch.blocks`.

Each module holds its parameters as fields named like the torch module's attributes, so a
parameter's key path in the module tree (`jax.tree_util.keystr(path, simple=True,
separator=".")`) is its checkpoint name (`docs/model.md`). As in the torch backend, the
first Linear of an invariant MLP is taken apart (`MLP.first`, `MLP.tail`): work on a
concatenation `[h_i, r_ji]` is done once per node for the `h_i` part and once per edge for
the `r_ji` part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import get_args

import equinox as eqx
from jaxtyping import Array, Float

import jax
import jax.numpy as jnp
from scalegmn.weightgraph import GroupKind, get_activation
from scalegmn.weightgraph.schemas import MlpActivation

# The MLP nonlinearities, read from the activation registry (one table for every backend).
_ACT: dict[str, Callable[[Array], Array]] = {
    name: get_activation(name).equinox_function(None) for name in get_args(MlpActivation)
}


def normalises(g: Array) -> Array:
    """Where group codes `g` (`GroupKind`) have continuous multipliers, which ScaleInv divides out."""
    return (g == GroupKind.SCALE) | (g == GroupKind.NONZERO)


def flips(g: Array) -> Array:
    """Where group codes `g` (`GroupKind`) have sign flips."""
    return (g == GroupKind.SIGN) | (g == GroupKind.NONZERO)


class DropoutKeys:
    """Dropout keys drawn one after the other from `key`, as the modules ask for them.

    Args:
        key: the call's dropout key, or `None` (inference: no dropout).
    """

    def __init__(self, key: Array | None) -> None:
        self.key = key

    def __call__(self) -> Array | None:
        """The next key, or `None` without a key."""
        if self.key is None:
            return None
        self.key, sub = jax.random.split(self.key)
        return sub


class InitKeys:
    """Initialisation keys, one handed out per parameter in the order the parameters are made.

    Every parameter is drawn from its own key of `jax.random.split(key, n_params)`, so a
    model's initial values depend only on the key and on the order of `docs/model.md`
    (each Linear's weight and bias, then the LayerNorm after it), not on how the module tree
    groups them.

    Args:
        keys: `[n_params]` keys, or `None` to count the parameters (any key is handed out).
    """

    def __init__(self, keys: Array | None) -> None:
        self.keys, self.count = keys, 0

    def __call__(self) -> Array:
        """The next parameter's key."""
        k = jax.random.key(0) if self.keys is None else self.keys[self.count]
        self.count += 1
        return k


class Linear(eqx.Module):
    """`y = x W^T + b` on the last axis (torch layout `W: [d_out, d_in]`, PyTorch's uniform init).

    Args:
        d_in: input width.
        d_out: output width.
        bias: with a bias.
        keys: initialisation keys.
        dtype: parameter dtype.
    """

    weight: Float[Array, "d_out d_in"]
    bias: Float[Array, " d_out"] | None

    def __init__(self, d_in: int, d_out: int, *, bias: bool = True, keys: InitKeys,
                 dtype: jnp.dtype = jnp.float32) -> None:
        bound = 1.0 / math.sqrt(d_in)
        self.weight = jax.random.uniform(keys(), (d_out, d_in), dtype, -bound, bound)
        self.bias = jax.random.uniform(keys(), (d_out,), dtype, -bound, bound) if bias else None

    def __call__(self, x: Float[Array, "... d_in"]) -> Float[Array, "... d_out"]:
        """Apply the map to the last axis."""
        y = x @ self.weight.T
        return y if self.bias is None else y + self.bias


class LayerNorm(eqx.Module):
    """LayerNorm over the last axis (eps 1e-5, affine; torch's `nn.LayerNorm`).

    Args:
        d: width.
        keys: initialisation keys (one per parameter is taken, though ones and zeros need none).
        dtype: parameter dtype.
    """

    weight: Float[Array, " d"]
    bias: Float[Array, " d"]

    def __init__(self, d: int, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32) -> None:
        keys(), keys()
        self.weight = jnp.ones((d,), dtype)
        self.bias = jnp.zeros((d,), dtype)

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        """Normalise the last axis."""
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-5) * self.weight + self.bias


class MLP(eqx.Module):
    """`Linear -> [LayerNorm] -> act -> [Dropout]` repeated `n_hidden` times, then `Linear`.

    Args:
        d_in: input width.
        d_hidden: width of the hidden layers.
        d_out: output width.
        n_hidden: number of hidden layers (0: one Linear).
        activation: `"relu"`, `"silu"`, `"gelu"` (exact) or `"tanh"`.
        layer_norm: LayerNorm before each activation.
        dropout: dropout probability after each activation.
        keys: initialisation keys.
        dtype: parameter dtype.
    """

    lin: tuple[Linear, ...]
    norm: tuple[LayerNorm, ...] | None
    activation: str = eqx.field(static=True)
    dropout: float = eqx.field(static=True)

    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_hidden: int, activation: str,
                 layer_norm: bool = False, dropout: float = 0.0, *, keys: InitKeys,
                 dtype: jnp.dtype = jnp.float32) -> None:
        dims = [d_in] + [d_hidden] * n_hidden + [d_out]
        lin, norm = [], []
        for k in range(len(dims) - 1):
            lin.append(Linear(dims[k], dims[k + 1], keys=keys, dtype=dtype))
            if layer_norm and k < n_hidden:
                norm.append(LayerNorm(d_hidden, keys=keys, dtype=dtype))
        self.lin = tuple(lin)
        self.norm = tuple(norm) if layer_norm else None
        self.activation = activation
        self.dropout = dropout

    def first(self, x: Float[Array, "... d_in"]) -> Array:
        """The first Linear without its bias (the part that `tail` continues from)."""
        return x @ self.lin[0].weight.T

    def tail(self, pre: Array, keys: DropoutKeys) -> Array:
        """The MLP from `pre = first(x)`: `[..., d_out]`; dropout keys from `keys`."""
        b0 = self.lin[0].bias
        assert b0 is not None
        x = pre + b0
        for k, lin in enumerate(self.lin[1:]):
            if self.norm is not None:
                x = self.norm[k](x)
            x = _ACT[self.activation](x)
            sub = keys() if self.dropout > 0 else None
            if sub is not None:
                keep = jax.random.bernoulli(sub, 1.0 - self.dropout, x.shape)
                x = jnp.where(keep, x / (1.0 - self.dropout), 0.0)
            x = lin(x)
        return x

    def __call__(self, x: Float[Array, "... d_in"], keys: DropoutKeys) -> Array:
        """Apply the MLP: `[..., d_in] -> [..., d_out]`."""
        return self.tail(self.first(x), keys)


def sqrt0(sq: Array) -> Array:
    """`sqrt(sq)` with gradient 0 at 0 (torch's norm), not NaN."""
    nonzero = sq > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def max_abs_sign(x: Array) -> tuple[Array, Array]:
    """Largest magnitude of each row and the sign of the first entry reaching it: `[..., 1]`."""
    idx = jnp.argmax(jnp.abs(x), axis=-1)
    v = jnp.take_along_axis(x, idx[..., None], -1)
    return jnp.abs(v), jnp.sign(v)


def canon_sign(parts: Sequence[tuple[Array, Array]]) -> Array:
    """Sign of the largest-magnitude entry of a concatenation (earlier parts win ties; 1 for 0)."""
    m, s = parts[0]
    for m2, s2 in parts[1:]:
        take = m2 > m
        s, m = jnp.where(take, s2, s), jnp.where(take, m2, m)
    return jnp.where(s == 0, 1.0, s)


def inv_tail(mlp: MLP, pre: Array, sq: Array, g: Array, sign: Array | None, eps: float,
             symmetrize: bool, keys: DropoutKeys) -> Array:
    """ScaleInv of the MLP `mlp` from `pre = W_0 x` and `sq = ||x||^2` (`[..., 1]`).

    `W_0 u = W_0 x / max(||x||, eps)` where the group normalises, and for sign groups
    `W_0 (-u) = -W_0 u` (one first Linear for both symmetrised branches), or `W_0 (s u)` with
    the canonicalising sign `s = sign` when not `symmetrize`.

    Args:
        mlp: the invariant MLP.
        pre: `[..., d]` its first Linear (no bias) of the rows.
        sq: `[..., 1]` the rows' squared norms.
        g: `[...]` the rows' group codes.
        sign: `[..., 1]` canonicalising signs (canonicalize mode), else `None`.
        eps: `norm_eps`.
        symmetrize: `sign_canon == "symmetrize"`.
        keys: dropout keys.

    Returns:
        `[..., d_out]`.
    """
    pre = jnp.where(normalises(g)[..., None], pre / jnp.maximum(sqrt0(sq), eps), pre)
    signed = flips(g)[..., None]
    if symmetrize:
        return mlp.tail(pre, keys) + jnp.where(signed, mlp.tail(-pre, keys), 0.0)
    assert sign is not None
    return mlp.tail(jnp.where(signed, sign * pre, pre), keys)


def scale_inv(mlp: MLP, x: Array, g: Array, eps: float, symmetrize: bool, keys: DropoutKeys) -> Array:
    """`ScaleInv_G(x)` of rows `x` `[..., d_in]` with group codes `g` `[...]`: `[..., d_out]`."""
    sign = None if symmetrize else canon_sign([max_abs_sign(x)])
    return inv_tail(mlp, mlp.first(x), jnp.sum(x * x, -1, keepdims=True), g, sign, eps, symmetrize, keys)


class ScaleEq(eqx.Module):
    """`ScaleEq_G(x) = (gamma x) * ScaleInv_G(x)` for an input of width `d_in`.

    Args:
        d_in: input width.
        d: output width.
        mlp_hidden: hidden width of the invariant MLP `inv`.
        n_hidden: its number of hidden layers.
        activation: its activation.
        layer_norm: LayerNorm in it.
        dropout: its dropout probability.
        keys: initialisation keys.
        dtype: parameter dtype.
    """

    gamma: Linear
    inv: MLP

    def __init__(self, d_in: int, d: int, mlp_hidden: int, n_hidden: int, activation: str,
                 layer_norm: bool, dropout: float, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32) -> None:
        self.gamma = Linear(d_in, d, bias=False, keys=keys, dtype=dtype)
        self.inv = MLP(d_in, mlp_hidden, d, n_hidden, activation, layer_norm, dropout, keys=keys, dtype=dtype)

    def _first(self, x: Array, off: int) -> Array:
        """`[gamma x, W_0 x]` for the columns `off:off + width(x)` of the input."""
        n = x.shape[-1]
        w = jnp.concatenate([self.gamma.weight[:, off:off + n], self.inv.lin[0].weight[:, off:off + n]], 0)
        return x @ w.T

    def node_part(self, xs: Sequence[Array], canonicalize: bool) -> list[Array]:
        """The node parts' share of the input `[*xs, *row parts]`, computed once per node.

        Per node part `x`: its columns of `gamma` and `W_0` applied to `x`, `||x||^2`, and for
        sign canonicalisation the largest `|x|` and its sign; to be gathered to the rows and
        passed to `rows`.
        """
        out: list[Array] = []
        off = 0
        for x in xs:
            out.append(self._first(x, off))
            out.append(jnp.sum(x * x, -1, keepdims=True))
            if canonicalize:
                out.extend(max_abs_sign(x))
            off += x.shape[-1]
        return out

    def rows(self, g: Array, node_vals: Sequence[Array], row_parts: Sequence[Array], offset: int,
             eps: float, symmetrize: bool, keys: DropoutKeys) -> Array:
        """`ScaleEq_G` on rows from `node_vals` (`node_part`, gathered to the rows) and the row
        parts (their columns start at `offset`); `g` the rows' group codes."""
        d = self.gamma.weight.shape[0]
        per = 2 if symmetrize else 4
        total: Array | None = None
        sq: Array | None = None
        signs = []
        for k in range(0, len(node_vals), per):
            y, s2 = node_vals[k], node_vals[k + 1]
            total = y if total is None else total + y
            sq = s2 if sq is None else sq + s2
            if not symmetrize:
                signs.append((node_vals[k + 2], node_vals[k + 3]))
        off = offset
        for x in row_parts:
            y = self._first(x, off)
            off += x.shape[-1]
            total = y if total is None else total + y
            s2 = jnp.sum(x * x, -1, keepdims=True)
            sq = s2 if sq is None else sq + s2
            if not symmetrize:
                signs.append(max_abs_sign(x))
        assert total is not None and sq is not None
        sign = canon_sign(signs) if signs else None
        return total[..., :d] * inv_tail(self.inv, total[..., d:], sq, g, sign, eps, symmetrize, keys)

    def __call__(self, x: Array, g: Array, eps: float, symmetrize: bool, keys: DropoutKeys) -> Array:
        """`ScaleEq_G(x)` of rows `x` `[..., d_in]` with group codes `g`: `[..., d]`."""
        return self.rows(g, [], [x], 0, eps, symmetrize, keys)


class ReScaleEq(eqx.Module):
    """`ReScaleEq(x, y) = (a x) * (b y)`: two Linears without bias, `d -> d`.

    Args:
        d: width.
        keys: initialisation keys.
        dtype: parameter dtype.
    """

    a: Linear
    b: Linear

    def __init__(self, d: int, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32) -> None:
        self.a = Linear(d, d, bias=False, keys=keys, dtype=dtype)
        self.b = Linear(d, d, bias=False, keys=keys, dtype=dtype)
