"""ScaleGMN in JAX/equinox: `docs/model.md`, with parameters stored by their checkpoint names."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
from jaxtyping import Array, Float

import jax
import jax.numpy as jnp
from scalegmn.weightgraph import GroupKind, ScaleGMNConfig

from .batch import DenseGraphBatch, GraphBatch
from .params import init_params

_ACT = {
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "tanh": jnp.tanh,
}
_MODE_CODE = {k.label: k for k in GroupKind}
# Tests switch this on to show that the uncorrected backward message breaks equivariance.
_NAIVE_BACKWARD = False


def _linear(x: Array, w: Array, b: Array | None = None) -> Array:
    y = x @ w.T
    return y if b is None else y + b


class _Ctx:
    """Per-call context: parameters, config, dropout keys."""

    def __init__(self, params: dict[str, Array], cfg: ScaleGMNConfig, key: Array | None) -> None:
        self.P, self.cfg, self.key = params, cfg, key

    def next_key(self) -> Array | None:
        if self.key is None:
            return None
        self.key, sub = jax.random.split(self.key)
        return sub

    def mlp(self, name: str, x: Array) -> Array:
        return self.tail(name, _linear(x, self.P[f"{name}.lin.0.weight"]))

    def tail(self, name: str, pre: Array) -> Array:
        """The MLP `name` from `pre = W_0 x`, its first Linear without the bias."""
        P, cfg = self.P, self.cfg
        x = pre + P[f"{name}.lin.0.bias"]
        k = 0
        while f"{name}.lin.{k + 1}.weight" in P:
            if f"{name}.norm.{k}.weight" in P:
                mu = x.mean(-1, keepdims=True)
                var = ((x - mu) ** 2).mean(-1, keepdims=True)
                x = (x - mu) / jnp.sqrt(var + 1e-5) * P[f"{name}.norm.{k}.weight"] + P[f"{name}.norm.{k}.bias"]
            x = _ACT[cfg.mlp_activation](x)
            sub = self.next_key() if cfg.dropout > 0 else None
            if sub is not None:
                keep = jax.random.bernoulli(sub, 1.0 - cfg.dropout, x.shape)
                x = jnp.where(keep, x / (1.0 - cfg.dropout), 0.0)
            k += 1
            x = _linear(x, P[f"{name}.lin.{k}.weight"], P[f"{name}.lin.{k}.bias"])
        return x

    def inv_tail(self, name: str, pre: Array, sq: Array, g: Array, sign: Array | None) -> Array:
        """ScaleInv from `pre = W_0 x` and `sq = ||x||^2`: `W_0 u = W_0 x / max(||x||, eps)` for
        scale groups, and `W_0 (-u) = -W_0 u` (one first Linear for both symmetrised branches)."""
        scaled = ((g == GroupKind.SCALE) | (g == GroupKind.NONZERO))[..., None]
        pre = jnp.where(scaled, pre / jnp.maximum(_sqrt0(sq), self.cfg.norm_eps), pre)
        signed = ((g == GroupKind.SIGN) | (g == GroupKind.NONZERO))[..., None]
        if self.cfg.sign_canon == "symmetrize":
            return self.tail(name, pre) + jnp.where(signed, self.tail(name, -pre), 0.0)
        assert sign is not None
        return self.tail(name, jnp.where(signed, sign * pre, pre))

    def scale_inv(self, name: str, x: Array, g: Array) -> Array:
        sign = None if self.cfg.sign_canon == "symmetrize" else _canon_sign([_max_abs_sign(x)])
        pre = _linear(x, self.P[f"{name}.lin.0.weight"])
        return self.inv_tail(name, pre, jnp.sum(x * x, -1, keepdims=True), g, sign)

    def eq_nodes(self, name: str, xs: Sequence[Array]) -> list[Array]:
        """The node parts' share of `ScaleEq_G` `name` (its input is `[*xs, *row parts]`).

        Per node part `x`: `x`'s columns of the first Linears (`gamma` and the ScaleInv's
        `W_0`) applied to `x`, `||x||^2`, and for sign canonicalisation the largest `|x|`
        and its sign; computed once per node, to be gathered to rows for `eq_rows`.
        """
        wg, w0 = self.P[f"{name}.gamma.weight"], self.P[f"{name}.inv.lin.0.weight"]
        out: list[Array] = []
        off = 0
        for x in xs:
            n = x.shape[-1]
            out.append(_linear(x, jnp.concatenate([wg[:, off:off + n], w0[:, off:off + n]], 0)))
            out.append(jnp.sum(x * x, -1, keepdims=True))
            if self.cfg.sign_canon == "canonicalize":
                out.extend(_max_abs_sign(x))
            off += n
        return out

    def eq_rows(self, name: str, g: Array, node_vals: Sequence[Array], row_parts: Sequence[Array],
                offset: int) -> Array:
        """`ScaleEq_G` `name` on rows: `node_vals` from `eq_nodes` (gathered to the rows), the
        row parts (their columns start at `offset`) and `g` the rows' group codes."""
        wg, w0 = self.P[f"{name}.gamma.weight"], self.P[f"{name}.inv.lin.0.weight"]
        d = wg.shape[0]
        canon = self.cfg.sign_canon == "canonicalize"
        per = 4 if canon else 2
        total: Array | None = None
        sq: Array | None = None
        signs = []
        for k in range(0, len(node_vals), per):
            y, s2 = node_vals[k], node_vals[k + 1]
            total = y if total is None else total + y
            sq = s2 if sq is None else sq + s2
            if canon:
                signs.append((node_vals[k + 2], node_vals[k + 3]))
        off = offset
        for x in row_parts:
            n = x.shape[-1]
            y = _linear(x, jnp.concatenate([wg[:, off:off + n], w0[:, off:off + n]], 0))
            off += n
            total = y if total is None else total + y
            s2 = jnp.sum(x * x, -1, keepdims=True)
            sq = s2 if sq is None else sq + s2
            if canon:
                signs.append(_max_abs_sign(x))
        assert total is not None and sq is not None
        sign = _canon_sign(signs) if signs else None
        return total[..., :d] * self.inv_tail(f"{name}.inv", total[..., d:], sq, g, sign)

    def scale_eq(self, name: str, x: Array, g: Array) -> Array:
        """`ScaleEq_G` `name` of `x` (rows with group codes `g`)."""
        return self.eq_rows(name, g, [], [x], 0)


def _sqrt0(sq: Array) -> Array:
    """`sqrt(sq)` with gradient 0 at 0 (torch's norm), not NaN."""
    nonzero = sq > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def _max_abs_sign(x: Array) -> tuple[Array, Array]:
    """Largest magnitude of each row and the sign of the first entry reaching it: `[..., 1]`."""
    idx = jnp.argmax(jnp.abs(x), axis=-1)
    v = jnp.take_along_axis(x, idx[..., None], -1)
    return jnp.abs(v), jnp.sign(v)


def _canon_sign(parts: list[tuple[Array, Array]]) -> Array:
    """Sign of the largest-magnitude entry of a concatenation (earlier parts win ties; 1 for 0)."""
    m, s = parts[0]
    for m2, s2 in parts[1:]:
        take = m2 > m
        s, m = jnp.where(take, s2, s), jnp.where(take, m2, m)
    return jnp.where(s == 0, 1.0, s)


def _segment_sum(x: Array, seg: Array, n: int) -> Array:
    return jax.ops.segment_sum(x, seg, num_segments=n)


CHUNK_ROWS = 2048
"""Edges per chunk of the dense layout's per-edge work (`_Dense._blockwise`)."""


def _chunk_size(B: int, rows_per_net: int) -> int:
    """Networks per chunk: the largest divisor of `B` with at most `CHUNK_ROWS` edges (>= 1)."""
    c = max(1, min(B, CHUNK_ROWS // max(rows_per_net, 1)))
    while B % c:
        c -= 1
    return c


class _Segments:
    """Message passing on a disjoint union: an edge value is one `[E, ...]` array; gathers and
    segment sums over `src`/`dst`."""

    def __init__(self, b: GraphBatch) -> None:
        self.b, self.n = b, b.node_features.shape[0]

    def emap(self, f: Callable[..., Array], *xs: Array) -> Array:
        return f(*xs)

    def edges_in(self, xe: Array) -> Array:
        return xe

    def edges_out(self, e: Array) -> Array:
        return e

    def shared(self, x: Array) -> Array:
        return x

    def at_src(self, x: Array) -> Array:
        return x[self.b.src]

    def at_dst(self, x: Array) -> Array:
        return x[self.b.dst]

    def aggregate(self, at: str, f: Callable[..., Array], *xs: Array) -> Array:
        """`f` on the edges, summed at each edge's target (`at="dst"`) or source (`"src"`)."""
        return _segment_sum(f(*xs), self.b.dst if at == "dst" else self.b.src, self.n)

    def graph_sum(self, x: Array) -> Array:
        return _segment_sum(x, self.b.node_batch, self.b.n_graphs)

    def output_nodes(self, h: Array, max_out: int) -> Array:
        b, B = self.b, self.b.n_graphs
        slot = jnp.where(b.node_role == 2, b.node_batch * max_out + b.node_pos, B * max_out)
        return _segment_sum(h, slot, B * max_out + 1)[:-1].reshape(B, -1)


class _Dense:
    """Message passing on stacked graphs of one shape.

    An edge value is a tuple of per-layer blocks `[B, n_l, n_{l-1}, ...]`, never one
    concatenated array: gathers are broadcastable views (`[B, 1, n_{l-1}, ...]` from the
    sources, `[B, n_l, 1, ...]` from the targets) that XLA fuses into their consumers, and
    aggregations are sums over one axis of a block, so no per-edge tensor is copied, padded
    or concatenated.
    """

    def __init__(self, b: DenseGraphBatch, chunk: bool) -> None:
        self.w = b.widths
        self.B = b.node_features.shape[0]
        self.no = [0, *itertools.accumulate(self.w)]
        self.eo = [0, *itertools.accumulate(self.w[k] * self.w[k - 1] for k in range(1, len(self.w)))]
        self.chunk = chunk

    def _nodes(self, x: Array, k: int) -> Array:
        return x[:, self.no[k]:self.no[k + 1]]

    def _full(self, m: Array, k: int) -> Array:
        return jnp.broadcast_to(m, (m.shape[0], self.w[k], self.w[k - 1], *m.shape[3:]))

    def _blockwise(self, f: Callable[..., Array], k: int, blocks: Sequence[Array]) -> Array:
        """`f` on block `k`, a few networks at a time when the block is large.

        Arrays with a leading batch axis are split into chunks of about `CHUNK_ROWS` edges;
        the others (leading axis 1) are shared by all chunks. Each chunk runs under
        `jax.checkpoint`, so the backward pass recomputes its per-edge temporaries instead of
        keeping them: they stay in cache, at the price of a second forward pass over them.
        """
        B = self.B
        c = _chunk_size(B, self.w[k] * self.w[k - 1]) if self.chunk else B
        if c >= B:
            return f(*blocks)
        split = [i for i, x in enumerate(blocks) if x.shape[0] == B]

        def one(xs: list[Array]) -> Array:
            args = list(blocks)
            for i, x in zip(split, xs, strict=True):
                args[i] = x
            return f(*args)

        out = jax.lax.map(jax.checkpoint(one), [blocks[i].reshape(B // c, c, *blocks[i].shape[1:]) for i in split])
        return out.reshape(B, *out.shape[2:])

    def emap(self, f: Callable[..., Array], *xs: tuple[Array, ...]) -> tuple[Array, ...]:
        return tuple(self._blockwise(lambda *a, k=k: self._full(f(*a), k), k, blocks)
                     for k, blocks in enumerate(zip(*xs, strict=True), 1))

    def aggregate(self, at: str, f: Callable[..., Array], *xs: tuple[Array, ...]) -> Array:
        """`f` on the edges, summed at each edge's target (`at="dst"`) or source (`"src"`)."""
        axis = 2 if at == "dst" else 1
        sums = [self._blockwise(lambda *a, k=k: self._full(f(*a), k).sum(axis), k, blocks)
                for k, blocks in enumerate(zip(*xs, strict=True), 1)]
        zeros = jnp.zeros((self.B, self.w[0] if at == "dst" else self.w[-1], *sums[0].shape[2:]), sums[0].dtype)
        return jnp.concatenate([zeros, *sums] if at == "dst" else [*sums, zeros], 1)

    def edges_in(self, xe: Array) -> tuple[Array, ...]:
        """`[B, E, ...]` (layer blocks, target-major) to per-layer blocks."""
        w, eo = self.w, self.eo
        return tuple(xe[:, eo[k - 1]:eo[k]].reshape(xe.shape[0], w[k], w[k - 1], *xe.shape[2:])
                     for k in range(1, len(w)))

    def edges_out(self, e: tuple[Array, ...]) -> Array:
        """Per-layer blocks back to the batch's `[B, E, ...]` layout."""
        return jnp.concatenate([x.reshape(x.shape[0], -1, *x.shape[3:]) for x in e], 1)

    def shared(self, x: Array) -> tuple[Array, ...]:
        """A per-edge array of the one shared graph (`[E, ...]`) as blocks `[1, n_l, n_{l-1}, ...]`."""
        return self.edges_in(x[None])

    def at_src(self, x: Array) -> tuple[Array, ...]:
        return tuple(self._nodes(x, k - 1)[:, None] for k in range(1, len(self.w)))

    def at_dst(self, x: Array) -> tuple[Array, ...]:
        return tuple(self._nodes(x, k)[:, :, None] for k in range(1, len(self.w)))

    def graph_sum(self, x: Array) -> Array:
        return x.sum(1)

    def output_nodes(self, h: Array, max_out: int) -> Array:
        out = self._nodes(h, len(self.w) - 1)
        out = jnp.pad(out, ((0, 0), (0, max_out - out.shape[1]), (0, 0)))
        return out.reshape(out.shape[0], -1)


def forward(params: dict[str, Array], cfg: ScaleGMNConfig, b: GraphBatch | DenseGraphBatch,
            key: Array | None = None) -> Array | tuple[Array, Array]:
    """The model's function given its parameters (pure; jit-friendly).

    Returns:
        `[B, d_out]` for the invariant head; `(node_features, edge_features)` edited, in the
        batch's layout, for the equivariant head.
    """
    cx = _Ctx(params, cfg, key)
    # Chunks run in a loop: dropout keys cannot be drawn inside it, so dropout runs unchunked.
    chunk = key is None or cfg.dropout == 0
    g: Any = _Dense(b, chunk) if isinstance(b, DenseGraphBatch) else _Segments(b)
    P, d = params, cfg.d_hidden
    # Per-node index arrays of the shared graph ([N]; the union's for a GraphBatch); feature
    # arrays carry the batch axis first in the dense layout and broadcast against these.
    role, pos, lyr = b.node_role, b.node_pos, b.node_layer
    src, dst = b.src, b.dst
    if cfg.symmetry in ("auto", "hetero"):
        grp = b.node_group
    else:
        grp = jnp.broadcast_to(jnp.where(role == 1, _MODE_CODE[cfg.symmetry], GroupKind.PERMUTATION), b.node_group.shape)
    grp_src, grp_dst = g.at_src(grp), g.at_dst(grp)
    x = b.node_features
    xin = jnp.where((role == 0)[:, None], jnp.asarray(cfg.input_node_value, x.dtype), x)
    h = _linear(xin, P["node_proj.weight"])
    xe = b.edge_features
    w_edge = P["edge_proj.weight"][:, :xe.shape[-1]]  # the zero padding to d_edge_in adds nothing
    if cfg.positional_encoding:
        add = jnp.where((role == 0)[:, None], P["pe_in"][jnp.clip(pos, 0, cfg.max_in_nodes - 1)],
                        jnp.where((role == 2)[:, None], P["pe_out"][jnp.clip(pos, 0, cfg.max_out_nodes - 1)], 0.0))
        mul = jnp.where((role == 1)[:, None], P["pe_hidden"][jnp.clip(lyr - 1, 0, cfg.max_hidden_layers - 1)], 1.0)
        h = h * mul + add
        from_in = (role[src] == 0)[:, None]
        into_out = (role[dst] == 2)[:, None]
        el = lyr[dst]
        pe_e = jnp.where(
            from_in, P["pe_edge_in"][jnp.clip(pos[src], 0, cfg.max_in_nodes - 1)],
            jnp.where(into_out, P["pe_edge_out"][jnp.clip(pos[dst], 0, cfg.max_out_nodes - 1)],
                      P["pe_edge_hidden"][jnp.clip(el - 2, 0, cfg.max_hidden_layers - 1)]))
        e = g.emap(lambda a, pe: _linear(a, w_edge) * pe, g.edges_in(xe), g.shared(pe_e))
    else:
        e = g.emap(lambda a: _linear(a, w_edge), g.edges_in(xe))
    for t in range(cfg.n_layers):
        pre = f"layers.{t}"
        recv = [h] if cfg.message_receiver else []  # the receiver's state enters every message
        off = d * len(recv)  # where the edge part's columns start in the message's first Linears
        # Row-wise linear maps commute with gathers: node parts are computed once per node
        # (N rows) and gathered to the E edges; only edge parts are computed per edge.
        name = f"{pre}.fwd.msg"
        wb = P[f"{pre}.fwd.rescale.b.weight"]

        def fwd_msg(gr: Array, s: Array, ee: Array, *nv: Array, name: str = name, wb: Array = wb,
                    off: int = off) -> Array:
            return cx.eq_rows(name, gr, nv, [s * _linear(ee, wb)], off)

        nodes = cx.eq_nodes(name, recv)
        parts = [h, g.aggregate("dst", fwd_msg, grp_dst, g.at_src(_linear(h, P[f"{pre}.fwd.rescale.a.weight"])),
                                e, *(g.at_dst(v) for v in nodes))]
        if cfg.bidirectional:
            name = f"{pre}.bwd.msg"
            wb = P[f"{pre}.bwd.rescale.b.weight"]
            # c_ji: squared norms only where the group has continuous multipliers.
            sq = jnp.sum(h * h, -1, keepdims=True)
            cont = ((grp == GroupKind.SCALE) | (grp == GroupKind.NONZERO))[..., None]
            n_src = jnp.where(cont, sq, 1.0)
            n_dst = jnp.where(cont, jnp.maximum(sq, cfg.norm_eps**2), 1.0)

            def bwd_msg(gr: Array, s: Array, ee: Array, a: Array, c: Array, *nv: Array, name: str = name,
                        wb: Array = wb, off: int = off) -> Array:
                r = s * _linear(ee, wb)
                return cx.eq_rows(name, gr, nv, [r if _NAIVE_BACKWARD else r * (a / c)], off)

            nodes = cx.eq_nodes(name, recv)
            parts.append(g.aggregate("src", bwd_msg, grp_src, g.at_dst(_linear(h, P[f"{pre}.bwd.rescale.a.weight"])),
                                     e, g.at_src(n_src), g.at_dst(n_dst), *(g.at_src(v) for v in nodes)))
        hn = cx.scale_eq(f"{pre}.upd", jnp.concatenate(parts, -1), grp)
        if cfg.skip_connections:
            hn = hn + h
        if f"{pre}.edge.gamma.weight" in P:
            inv = cx.scale_inv(f"{pre}.edge.inv", hn, grp)
            w0 = P[f"{pre}.edge.mlp.lin.0.weight"]  # first Linear of [inv_src, inv_dst], per node
            wg = P[f"{pre}.edge.gamma.weight"]

            def edge_update(ee: Array, a: Array, c: Array, wg: Array = wg, name: str = f"{pre}.edge.mlp") -> Array:
                en = _linear(ee, wg) * cx.tail(name, a + c)
                return en + ee if cfg.skip_connections else en

            e = g.emap(edge_update, e, g.at_src(_linear(inv, w0[:, :d])), g.at_dst(_linear(inv, w0[:, d:])))
        h = hn
    if cfg.head == "equivariant":
        alpha = P["head.alpha"]
        dn = _linear(h, P["head.node.weight"])
        node = x + jnp.where((role == 0)[:, None], 0.0, alpha[jnp.clip(lyr - 1, 0, None)][:, None] * dn)
        w_out = P["head.edge.weight"][: xe.shape[-1]]
        scale = alpha[lyr[dst] - 1][:, None] * b.edge_mask
        de = g.emap(lambda ee, s: s * _linear(ee, w_out), e, g.shared(scale))
        return node, xe + g.edges_out(de)
    if cfg.readout == "last_layer":
        return cx.mlp("readout.mlp", g.output_nodes(h, cfg.max_out_nodes))
    v = cx.scale_inv("readout.inv", h, grp)
    s_h = g.graph_sum(jnp.where((role == 1)[:, None], v, 0.0))
    s_in = g.graph_sum(jnp.where((role == 0)[:, None], h, 0.0))
    s_out = g.graph_sum(jnp.where((role == 2)[:, None], h, 0.0))
    return cx.mlp("readout.mlp", jnp.concatenate([s_h, s_in, s_out], -1))


class ScaleGMN(eqx.Module):
    """ScaleGMN / ScaleGMN-B (`config.bidirectional`) in JAX.

    `model(batch)` is inference (no dropout); `model(batch, key=k)` is training mode.
    Parameters live in `params`, keyed by the checkpoint names of `docs/model.md` (the torch
    `state_dict` keys), so checkpoints move between backends unchanged.

    Example:
        ```python
        import jax
        from scalegmn.weightgraph import NetworkSpec, random_network
        from scalegmn.jax import ScaleGMN, ScaleGMNConfig, collate

        model = ScaleGMN(ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=3), key=jax.random.key(0))
        nets = [random_network(NetworkSpec.mlp([2, 4, 1], "relu"), rng=i, dtype="float32") for i in range(2)]
        assert model(collate(nets)).shape == (2, 3)
        ```
    """

    params: dict[str, Array]
    config: ScaleGMNConfig = eqx.field(static=True)

    def __init__(self, config: ScaleGMNConfig, *, key: Array | None = None,
                 dtype: jnp.dtype = jnp.float32, params: dict[str, Array] | None = None) -> None:
        if not isinstance(config, ScaleGMNConfig):
            raise TypeError(f"ScaleGMN expects a ScaleGMNConfig, got {type(config).__name__}")
        self.config = config
        if params is None:
            params = init_params(config, key if key is not None else jax.random.key(0), dtype)
        self.params = dict(params)

    def __call__(self, batch: GraphBatch | DenseGraphBatch, *, key: Array | None = None) -> Float[Array, "B d_out"] | tuple[Array, Array]:
        """Apply the model to a batch from `collate`."""
        if not isinstance(batch, GraphBatch | DenseGraphBatch):
            raise TypeError(f"ScaleGMN expects a batch from scalegmn.jax.collate, got {type(batch).__name__}")
        for spec in batch.specs:
            self.config.check_compatible(spec)
        dt = self.params["node_proj.weight"].dtype
        if batch.node_features.dtype != dt:
            raise TypeError(f"the batch is {batch.node_features.dtype} but the model is {dt}: "
                            f"use collate(networks, dtype={dt})")
        stripped = dataclasses.replace(batch, specs=())
        if _NAIVE_BACKWARD:
            return forward(self.params, self.config, stripped, key)
        return _forward_jit(self.params, self.config, stripped, key)


_forward_jit = eqx.filter_jit(forward)
