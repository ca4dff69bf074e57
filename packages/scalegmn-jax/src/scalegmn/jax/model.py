"""ScaleGMN in JAX/equinox: `docs/model.md`, with parameters stored by their checkpoint names."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import equinox as eqx
from jaxtyping import Array, Float

import jax
import jax.numpy as jnp
from scalegmn.weightgraph import ScaleGMNConfig

from .batch import DenseGraphBatch, GraphBatch
from .params import init_params

_ACT = {
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "tanh": jnp.tanh,
}
_MODE_CODE = {"permutation": 0, "scale": 1, "sign": 2, "nonzero": 3}
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
            sub = self.next_key()
            if sub is not None and cfg.dropout > 0:
                keep = jax.random.bernoulli(sub, 1.0 - cfg.dropout, x.shape)
                x = jnp.where(keep, x / (1.0 - cfg.dropout), 0.0)
            k += 1
            x = _linear(x, P[f"{name}.lin.{k}.weight"], P[f"{name}.lin.{k}.bias"])
        return x

    def inv_tail(self, name: str, pre: Array, sq: Array, g: Array, sign: Array | None) -> Array:
        """ScaleInv from `pre = W_0 x` and `sq = ||x||^2`: `W_0 u = W_0 x / max(||x||, eps)` for
        scale groups, and `W_0 (-u) = -W_0 u` (one first Linear for both symmetrised branches)."""
        scaled = ((g == 1) | (g == 3))[..., None]
        pre = jnp.where(scaled, pre / jnp.maximum(_sqrt0(sq), self.cfg.norm_eps), pre)
        signed = ((g == 2) | (g == 3))[..., None]
        if self.cfg.sign_canon == "symmetrize":
            return self.tail(name, pre) + jnp.where(signed, self.tail(name, -pre), 0.0)
        assert sign is not None
        return self.tail(name, jnp.where(signed, sign * pre, pre))

    def scale_inv(self, name: str, x: Array, g: Array) -> Array:
        sign = None if self.cfg.sign_canon == "symmetrize" else _canon_sign([_max_abs_sign(x)])
        pre = _linear(x, self.P[f"{name}.lin.0.weight"])
        return self.inv_tail(name, pre, jnp.sum(x * x, -1, keepdims=True), g, sign)

    def scale_eq(self, name: str, parts: Sequence[tuple[Array, Callable[[Array], Array] | None]],
                 g: Array) -> Array:
        """`ScaleEq_G` of the concatenation of `parts` without building it on every row.

        A part `(x, gather)` with a `gather` lives on nodes: its share of the first Linears
        (`gamma` and the ScaleInv's `W_0`) is computed once per node, then gathered to rows.
        """
        wg, w0 = self.P[f"{name}.gamma.weight"], self.P[f"{name}.inv.lin.0.weight"]
        d = wg.shape[0]
        total: Array | None = None
        sq: Array | None = None
        signs = []
        off = 0
        for x, gather in parts:
            n = x.shape[-1]
            y = _linear(x, jnp.concatenate([wg[:, off:off + n], w0[:, off:off + n]], 0))
            s2 = jnp.sum(x * x, -1, keepdims=True)
            ms = _max_abs_sign(x) if self.cfg.sign_canon == "canonicalize" else None
            if gather is not None:
                y, s2 = gather(y), gather(s2)
                ms = None if ms is None else (gather(ms[0]), gather(ms[1]))
            total = y if total is None else total + y
            sq = s2 if sq is None else sq + s2
            if ms is not None:
                signs.append(ms)
            off += n
        assert total is not None and sq is not None
        sign = _canon_sign(signs) if signs else None
        return total[..., :d] * self.inv_tail(f"{name}.inv", total[..., d:], sq, g, sign)


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


class _Segments:
    """Message passing on a disjoint union: gathers and segment sums over `src`/`dst`."""

    def __init__(self, b: GraphBatch) -> None:
        self.b, self.n = b, b.node_features.shape[0]

    def at_src(self, x: Array) -> Array:
        return x[self.b.src]

    def at_dst(self, x: Array) -> Array:
        return x[self.b.dst]

    def sum_at_dst(self, m: Array) -> Array:
        return _segment_sum(m, self.b.dst, self.n)

    def sum_at_src(self, m: Array) -> Array:
        return _segment_sum(m, self.b.src, self.n)

    def graph_sum(self, x: Array) -> Array:
        return _segment_sum(x, self.b.node_batch, self.b.n_graphs)

    def output_nodes(self, h: Array, max_out: int) -> Array:
        b, B = self.b, self.b.n_graphs
        slot = jnp.where(b.node_role == 2, b.node_batch * max_out + b.node_pos, B * max_out)
        return _segment_sum(h, slot, B * max_out + 1)[:-1].reshape(B, -1)


class _Dense:
    """Message passing on stacked graphs of one shape: edge block `l` is `[B, n_l, n_{l-1}]`,
    so gathers are broadcasts and aggregations are sums over one axis of the block."""

    def __init__(self, b: DenseGraphBatch) -> None:
        self.w = b.widths
        self.no = [0, *itertools.accumulate(self.w)]

    def _nodes(self, x: Array, k: int) -> Array:
        return x[:, self.no[k]:self.no[k + 1]]

    def _edges(self, parts: list[Array]) -> Array:
        return jnp.concatenate([p.reshape(p.shape[0], -1, *p.shape[3:]) for p in parts], 1)

    def at_src(self, x: Array) -> Array:
        w = self.w
        return self._edges([jnp.broadcast_to(self._nodes(x, k - 1)[:, None],
                                             (x.shape[0], w[k], w[k - 1], *x.shape[2:]))
                            for k in range(1, len(w))])

    def at_dst(self, x: Array) -> Array:
        w = self.w
        return self._edges([jnp.broadcast_to(self._nodes(x, k)[:, :, None],
                                             (x.shape[0], w[k], w[k - 1], *x.shape[2:]))
                            for k in range(1, len(w))])

    def _blocks(self, m: Array) -> list[Array]:
        w, out, lo = self.w, [], 0
        for k in range(1, len(w)):
            hi = lo + w[k] * w[k - 1]
            out.append(m[:, lo:hi].reshape(m.shape[0], w[k], w[k - 1], *m.shape[2:]))
            lo = hi
        return out

    def sum_at_dst(self, m: Array) -> Array:
        sums = [blk.sum(2) for blk in self._blocks(m)]
        return jnp.concatenate([jnp.zeros((m.shape[0], self.w[0], *m.shape[2:]), m.dtype), *sums], 1)

    def sum_at_src(self, m: Array) -> Array:
        sums = [blk.sum(1) for blk in self._blocks(m)]
        return jnp.concatenate([*sums, jnp.zeros((m.shape[0], self.w[-1], *m.shape[2:]), m.dtype)], 1)

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
    g: _Segments | _Dense = _Dense(b) if isinstance(b, DenseGraphBatch) else _Segments(b)
    P, d = params, cfg.d_hidden
    # Per-node index arrays of the shared graph ([N]; the union's for a GraphBatch); feature
    # arrays carry the batch axis first in the dense layout and broadcast against these.
    role, pos, lyr = b.node_role, b.node_pos, b.node_layer
    src, dst = b.src, b.dst
    if cfg.symmetry in ("auto", "hetero"):
        grp = b.node_group
    else:
        grp = jnp.broadcast_to(jnp.where(role == 1, _MODE_CODE[cfg.symmetry], 0), b.node_group.shape)
    grp_src, grp_dst = g.at_src(grp), g.at_dst(grp)
    x = b.node_features
    xin = jnp.where((role == 0)[:, None], jnp.asarray(cfg.input_node_value, x.dtype), x)
    h = _linear(xin, P["node_proj.weight"])
    xe = b.edge_features
    xe_pad = jnp.pad(xe, [(0, 0)] * (xe.ndim - 1) + [(0, cfg.d_edge_in - xe.shape[-1])])
    e = _linear(xe_pad, P["edge_proj.weight"])
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
        e = e * pe_e
    for t in range(cfg.n_layers):
        pre = f"layers.{t}"
        # Row-wise linear maps commute with gathers: project the N nodes, then gather to E edges.
        r = g.at_src(_linear(h, P[f"{pre}.fwd.rescale.a.weight"])) * _linear(e, P[f"{pre}.fwd.rescale.b.weight"])
        z = [(h, g.at_dst), (r, None)] if cfg.message_receiver else [(r, None)]
        m = cx.scale_eq(f"{pre}.fwd.msg", z, grp_dst)
        parts = [h, g.sum_at_dst(m)]
        if cfg.bidirectional:
            rb = g.at_dst(_linear(h, P[f"{pre}.bwd.rescale.a.weight"])) * _linear(e, P[f"{pre}.bwd.rescale.b.weight"])
            if not _NAIVE_BACKWARD:
                # c_ji: squared norms only where the group has continuous multipliers.
                sq = jnp.sum(h * h, -1, keepdims=True)
                cont = ((grp == 1) | (grp == 3))[..., None]
                n_src = jnp.where(cont, sq, 1.0)
                n_dst = jnp.where(cont, jnp.maximum(sq, cfg.norm_eps**2), 1.0)
                rb = rb * (g.at_src(n_src) / g.at_dst(n_dst))
            zb = [(h, g.at_src), (rb, None)] if cfg.message_receiver else [(rb, None)]
            mb = cx.scale_eq(f"{pre}.bwd.msg", zb, grp_src)
            parts.append(g.sum_at_src(mb))
        hn = cx.scale_eq(f"{pre}.upd", [(jnp.concatenate(parts, -1), None)], grp)
        if cfg.skip_connections:
            hn = hn + h
        if f"{pre}.edge.gamma.weight" in P:
            inv = cx.scale_inv(f"{pre}.edge.inv", hn, grp)
            w0 = P[f"{pre}.edge.mlp.lin.0.weight"]  # first Linear of [inv_src, inv_dst], per node
            en = _linear(e, P[f"{pre}.edge.gamma.weight"]) * cx.tail(
                f"{pre}.edge.mlp", g.at_src(_linear(inv, w0[:, :d])) + g.at_dst(_linear(inv, w0[:, d:])))
            e = en + e if cfg.skip_connections else en
        h = hn
    if cfg.head == "equivariant":
        alpha = P["head.alpha"]
        dn = _linear(h, P["head.node.weight"])
        node = x + jnp.where((role == 0)[:, None], 0.0, alpha[jnp.clip(lyr - 1, 0, None)][:, None] * dn)
        de = _linear(e, P["head.edge.weight"][: xe.shape[-1]]) * b.edge_mask
        edge = xe + alpha[lyr[dst] - 1][:, None] * de
        return node, edge
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
        >>> import jax
        >>> from scalegmn.weightgraph import NetworkSpec, random_network
        >>> from scalegmn.jax import ScaleGMN, ScaleGMNConfig, collate
        >>> model = ScaleGMN(ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=3), key=jax.random.key(0))
        >>> nets = [random_network(NetworkSpec.mlp([2, 4, 1], "relu"), rng=i, dtype="float32") for i in range(2)]
        >>> model(collate(nets)).shape
        (2, 3)
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
