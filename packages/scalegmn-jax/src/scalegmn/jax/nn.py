"""The building blocks of ScaleGMN as equinox modules, mirroring `scalegmn.torch.blocks`.

Each module holds its parameters as fields named like the torch module's attributes, so a
parameter's key path in the module tree (`jax.tree_util.keystr(path, simple=True,
separator=".")`) is its checkpoint name (`docs/model.md`). As in the torch backend, the
first Linear of an invariant MLP is taken apart (`MLP.first`, `MLP.tail`): work on a
concatenation `[h_i, r_ji]` is done once per node for the `h_i` part and once per edge for
the `r_ji` part.
"""

from __future__ import annotations

import itertools
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


def positive_scaling(g: Array) -> Array:
    """Where group codes `g` have positive multipliers only (the rows of `inv_scale`, `per_group_inv`)."""
    return normalises(g) & ~flips(g)


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
        extra: root key of `extra`, the stream of the parameters that only non-default
            options create (`FoldedKeys`), or `None`.
    """

    extra: FoldedKeys

    def __init__(self, keys: Array | None, extra: Array | None = None) -> None:
        self.keys, self.count = keys, 0
        self.extra = FoldedKeys(extra)

    def __call__(self) -> Array:
        """The next parameter's key."""
        k = jax.random.key(0) if self.keys is None else self.keys[self.count]
        self.count += 1
        return k

    def skip(self, n: int) -> None:
        """Hand out `n` keys to nobody (a parameter the configuration leaves out keeps its key)."""
        self.count += n


class FoldedKeys(InitKeys):
    """Keys of the parameters of non-default options: `fold_in(root, k)` for the k-th one.

    They come from their own stream, so adding an option's parameters leaves the keys (and
    the initial values) of every other parameter as they are without the option.

    Args:
        root: the stream's root key, or `None` to count (any key is handed out).
    """

    def __init__(self, root: Array | None) -> None:
        self.keys, self.count, self.root = None, 0, root
        self.extra = self

    def __call__(self) -> Array:
        """The next parameter's key."""
        k = jax.random.key(0) if self.root is None else jax.random.fold_in(self.root, self.count)
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


def canonical(x: Array, g: Array, eps: float) -> Array:
    """`x / max(||x||, eps)` on rows whose group normalises, `x` elsewhere (`[..., d]`)."""
    return jnp.where(normalises(g)[..., None], x / jnp.maximum(sqrt0(jnp.sum(x * x, -1, keepdims=True)), eps), x)


def sign_canonical(x: Array, g: Array, eps: float) -> Array:
    """The canonical form read by `edge_inv="canon"`: `canonical`, then `s c` on rows whose group flips."""
    c = canonical(x, g, eps)
    return jnp.where(flips(g)[..., None], canon_sign([max_abs_sign(c)]) * c, c)


def scale_inv_options(mlp: MLP, x: Array, g: Array, eps: float, mode: str, keys: DropoutKeys,
                      rho: MLP | None = None, inv_scale: MLP | None = None) -> Array:
    """`ScaleInv_G(x)` with the options of a readout: `rho` (`symmetrize_phi`) and `inv_scale`.

    Args:
        mlp: the invariant MLP `inv`.
        x: `[..., d_in]` rows.
        g: `[...]` their group codes.
        eps: `norm_eps`.
        mode: `sign_canon`.
        keys: dropout keys.
        rho: the inner MLP of `symmetrize_phi` (rows whose group flips: `inv(rho(c) + rho(-c))`).
        inv_scale: the MLP of the rows of positive scaling groups (`per_group_inv`).

    Returns:
        `[..., d_out]`.
    """
    if rho is None and inv_scale is None:
        return scale_inv(mlp, x, g, eps, mode != "canonicalize", keys)
    c = canonical(x, g, eps)
    flip = flips(g)[..., None]
    if mode == "canonicalize":
        out = mlp(jnp.where(flip, canon_sign([max_abs_sign(x)]) * c, c), keys)
    elif mode == "symmetrize":
        out = mlp(c, keys) + jnp.where(flip, mlp(-c, keys), 0.0)
    else:
        out = mlp(c, keys)
        if rho is not None:
            out = jnp.where(flip, mlp(rho(c, keys) + rho(-c, keys), keys), out)
    if inv_scale is not None:
        out = jnp.where(positive_scaling(g)[..., None], inv_scale(c, keys), out)
    return out


class ScaleEq(eqx.Module):
    """`ScaleEq_G(x) = (gamma x) * ScaleInv_G(x)` for an input of width `d_in`.

    With the options of `docs/model.md`: `rho` (`sign_canon="symmetrize_phi"`: rows whose
    group flips use `inv(rho(c) + rho(-c))`), `io` (`io_mlps`: rows whose receiver is an input
    or output node use `(gamma x) * io[k](x)`), `inv_scale` (`per_group_inv`: rows of positive
    scaling groups), and `d_pos` positional inputs (`positional_features`: every invariant
    MLP but `rho` reads `[c, p]` with the receiver's positional vector `p`).

    Args:
        d_in: input width.
        d: output width.
        mlp_hidden: hidden width of the invariant MLP `inv`.
        n_hidden: its number of hidden layers.
        activation: its activation.
        layer_norm: LayerNorm in it.
        dropout: its dropout probability.
        keys: initialisation keys (the options' MLPs draw from `keys.extra`).
        dtype: parameter dtype.
        rho: with the MLP `rho` (`d_in -> d_in`).
        n_io: number of io MLPs (`io_mlps`).
        d_pos: width of the positional inputs (0: none).
        inv_scale: with the MLP `inv_scale`.
    """

    gamma: Linear
    inv: MLP
    rho: MLP | None
    io: tuple[MLP, ...] | None
    inv_scale: MLP | None

    def __init__(self, d_in: int, d: int, mlp_hidden: int, n_hidden: int, activation: str,
                 layer_norm: bool, dropout: float, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32,
                 rho: bool = False, n_io: int = 0, d_pos: int = 0, inv_scale: bool = False) -> None:
        def mlp(a: int, b: int, k: InitKeys) -> MLP:
            return MLP(a, mlp_hidden, b, n_hidden, activation, layer_norm, dropout, keys=k, dtype=dtype)

        self.gamma = Linear(d_in, d, bias=False, keys=keys, dtype=dtype)
        self.inv = mlp(d_in + d_pos, d, keys)
        new = keys.extra
        self.rho = mlp(d_in, d_in, new) if rho else None
        self.io = tuple(mlp(d_in + d_pos, d, new) for _ in range(n_io)) if n_io else None
        self.inv_scale = mlp(d_in + d_pos, d, new) if inv_scale else None

    @property
    def plain(self) -> bool:
        """Without options: `gamma` and `inv` only (today's ScaleEq)."""
        return self.rho is None and self.io is None and self.inv_scale is None and self.d_pos == 0

    @property
    def d_pos(self) -> int:
        """Width of the positional inputs of the invariant MLPs."""
        return self.inv.lin[0].weight.shape[1] - self.gamma.weight.shape[1]

    def _mlps(self) -> list[MLP]:
        """The invariant MLPs that read `x` (and `p`): `inv`, `inv_scale`, `io...`."""
        out = [self.inv]
        if self.inv_scale is not None:
            out.append(self.inv_scale)
        return out + list(self.io or ())

    def _x_weights(self) -> list[Array]:
        """The first Linears on the input `x`: `gamma`, `inv`, [`inv_scale`], [`rho`], [`io...`]."""
        n = self.gamma.weight.shape[1]
        ws = [self.gamma.weight, self.inv.lin[0].weight[:, :n] if self.d_pos else self.inv.lin[0].weight]
        if self.inv_scale is not None:
            ws.append(self.inv_scale.lin[0].weight[:, :n])
        if self.rho is not None:
            ws.append(self.rho.lin[0].weight)
        return ws + [m.lin[0].weight[:, :n] for m in self.io or ()]

    def _first(self, x: Array, off: int) -> Array:
        """`[gamma x, W_0 x, ...]` (`_x_weights`) for the columns `off:off + width(x)` of the input."""
        n = x.shape[-1]
        w = jnp.concatenate([w[:, off:off + n] for w in self._x_weights()], 0)
        return x @ w.T

    def pos_part(self, p: Array) -> Array:
        """The positional columns of the first Linears of `inv`, [`inv_scale`], [`io...`] on `p`, per node."""
        n = self.gamma.weight.shape[1]
        return p @ jnp.concatenate([m.lin[0].weight[:, n:] for m in self._mlps()], 0).T

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
             eps: float, symmetrize: bool, keys: DropoutKeys, *, mode: str | None = None,
             io: Array | None = None, pos: Array | None = None) -> Array:
        """`ScaleEq_G` on rows from `node_vals` (`node_part`, gathered to the rows) and the row
        parts (their columns start at `offset`); `g` the rows' group codes.

        With options: `mode` the `sign_canon` (default from `symmetrize`), `io` the rows' io
        MLP index (`-1`: none), `pos` the rows' `pos_part` of their receivers.
        """
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
        if self.plain:
            return total[..., :d] * inv_tail(self.inv, total[..., d:], sq, g, sign, eps, symmetrize, keys)
        return total[..., :d] * self._options_tail(total, sq, g, sign, eps,
                                                   mode or ("symmetrize" if symmetrize else "canonicalize"),
                                                   io, pos, keys)

    def _options_tail(self, total: Array, sq: Array, g: Array, sign: Array | None, eps: float, mode: str,
                      io: Array | None, pos: Array | None, keys: DropoutKeys) -> Array:
        """The ScaleInv factor of `rows` with options, from the first Linears `total` (`_x_weights`)."""
        widths = [w.shape[0] for w in self._x_weights()]
        cuts = list(itertools.accumulate(widths))[:-1]
        parts = iter(jnp.split(total, cuts, axis=-1))
        next(parts)  # gamma x
        raw_inv = next(parts)
        raw_scale = next(parts) if self.inv_scale is not None else None
        raw_rho = next(parts) if self.rho is not None else None
        raw_io = [next(parts) for _ in self.io or ()]
        pp: list[Array | float] = [0.0] * len(self._mlps())
        if pos is not None:
            pcuts = list(itertools.accumulate(m.lin[0].weight.shape[0] for m in self._mlps()))[:-1]
            pp = list(jnp.split(pos, pcuts, axis=-1))
        norm = jnp.maximum(sqrt0(sq), eps)

        def canon(pre: Array) -> Array:
            return jnp.where(normalises(g)[..., None], pre / norm, pre)

        flip = flips(g)[..., None]
        ci = canon(raw_inv)
        if mode == "symmetrize":
            out = self.inv.tail(ci + pp[0], keys) + jnp.where(flip, self.inv.tail(pp[0] - ci, keys), 0.0)
        elif mode == "canonicalize":
            assert sign is not None
            out = self.inv.tail(jnp.where(flip, sign * ci, ci) + pp[0], keys)
        else:
            out = self.inv.tail(ci + pp[0], keys)
            if self.rho is not None:
                assert raw_rho is not None
                r = self.symmetric_rho(canon(raw_rho), keys)
                n = self.gamma.weight.shape[1]
                out = jnp.where(flip, self.inv.tail(r @ self.inv.lin[0].weight[:, :n].T + pp[0], keys), out)
        k = 1
        if self.inv_scale is not None:
            assert raw_scale is not None
            scale = positive_scaling(g)[..., None]
            out = jnp.where(scale, self.inv_scale.tail(canon(raw_scale) + pp[1], keys), out)
            k = 2
        for j, (m, raw) in enumerate(zip(self.io or (), raw_io, strict=True)):
            assert io is not None
            out = jnp.where((io == j)[..., None], m.tail(raw + pp[k + j], keys), out)
        return out

    def symmetric_rho(self, pre: Array, keys: DropoutKeys) -> Array:
        """`rho(c) + rho(-c)` from `pre = W_0 c` of `rho` (`symmetrize_phi`)."""
        assert self.rho is not None
        return self.rho.tail(pre, keys) + self.rho.tail(-pre, keys)

    def __call__(self, x: Array, g: Array, eps: float, symmetrize: bool, keys: DropoutKeys, *,
                 mode: str | None = None, io: Array | None = None, pos: Array | None = None) -> Array:
        """`ScaleEq_G(x)` of rows `x` `[..., d_in]` with group codes `g`: `[..., d]` (options as `rows`)."""
        return self.rows(g, [], [x], 0, eps, symmetrize, keys, mode=mode, io=io, pos=pos)


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
