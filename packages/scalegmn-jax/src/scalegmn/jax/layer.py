"""One message-passing layer of ScaleGMN / ScaleGMN-B (`layers.{t}` in `docs/model.md`).

The layer is written once over a graph layout `g` (`scalegmn.jax.model`): a disjoint union
(edge values `[E, d]`, gathers by index, segment sums) or stacked graphs of one shape (edge
values are per-layer blocks `[B, n_l, n_{l-1}, d]`, gathers are broadcasts, aggregations
sums over an axis). Row-wise linear maps commute with gathers, so node parts of a message
are computed once per node and gathered to the edges; only edge parts are computed per edge.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
from jaxtyping import Array

import jax.numpy as jnp
from scalegmn.weightgraph import ScaleGMNConfig

from .nn import (
    MLP,
    DropoutKeys,
    InitKeys,
    Linear,
    ReScaleEq,
    ScaleEq,
    normalises,
    scale_inv,
    sign_canonical,
)


def _scale_eq(cfg: ScaleGMNConfig, d_in: int, d_out: int, *, keys: InitKeys, dtype: jnp.dtype) -> ScaleEq:
    """A ScaleEq of a message or a node update with the options of `cfg` (`docs/model.md`)."""
    return ScaleEq(d_in, d_out, cfg.mlp_width, cfg.mlp_layers, cfg.mlp_activation, cfg.layer_norm, cfg.dropout,
                   keys=keys, dtype=dtype, rho=has_rho(cfg), n_io=cfg.io_mlps,
                   d_pos=cfg.d_hidden if cfg.positional_features else 0, inv_scale=cfg.per_group_inv)


def has_rho(cfg: ScaleGMNConfig) -> bool:
    """Whether the ScaleInvs of `cfg` have the inner MLP `rho` (`sign_canon="symmetrize_phi"`)."""
    return cfg.sign_canon == "symmetrize_phi" and cfg.symmetry in ("sign", "auto", "hetero")


class Direction(eqx.Module):
    """A message direction: `rescale` (ReScaleEq) and `msg` (ScaleEq of `[h_i, r_ji]` or `r_ji`).

    Args:
        cfg: the model configuration.
        keys: initialisation keys.
        dtype: parameter dtype.
    """

    rescale: ReScaleEq
    msg: ScaleEq

    def __init__(self, cfg: ScaleGMNConfig, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32) -> None:
        d = cfg.d_hidden
        self.rescale = ReScaleEq(d, keys=keys, dtype=dtype)
        self.msg = _scale_eq(cfg, 2 * d if cfg.message_receiver else d, d, keys=keys, dtype=dtype)


class EdgeUpdate(eqx.Module):
    """Edge update: `e'_ij = (gamma e_ij) * mlp([ScaleInv(h_j), ScaleInv(h_i)])` (`inv` the ScaleInv).

    With `edge_inv="canon"` there is no `inv`: the MLP reads the canonical forms of the states.

    Args:
        cfg: the model configuration.
        keys: initialisation keys.
        dtype: parameter dtype.
        d_out: output width (default `d_hidden`).
    """

    gamma: Linear
    inv: MLP | None
    mlp: MLP

    def __init__(self, cfg: ScaleGMNConfig, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32,
                 d_out: int | None = None) -> None:
        d = cfg.d_hidden
        n = d if d_out is None else d_out
        self.gamma = Linear(d, n, bias=False, keys=keys, dtype=dtype)
        inv = MLP(d, cfg.mlp_width, d, cfg.mlp_layers, cfg.mlp_activation, cfg.layer_norm,
                  cfg.dropout, keys=keys, dtype=dtype)  # made without edge_inv="mlp" too: the keys stay put
        self.inv = inv if cfg.edge_inv == "mlp" else None
        self.mlp = MLP(2 * d, cfg.mlp_width, n, cfg.mlp_layers, cfg.mlp_activation, cfg.layer_norm,
                       cfg.dropout, keys=keys, dtype=dtype)


class GMNLayer(eqx.Module):
    """One layer: `fwd`, `bwd` (bidirectional), the node update `upd`, the edge update `edge`,
    and with options the backward edge update `edge_bwd` and the node skip map `skip`.

    Args:
        cfg: the model configuration.
        edge_update: whether the layer updates the edges.
        keys: initialisation keys.
        dtype: parameter dtype.
        head_layer: the last layer under `head_in_last_layer` (it writes the equivariant
            head's channels and has no skip connections).
    """

    fwd: Direction
    bwd: Direction | None
    upd: ScaleEq
    edge: EdgeUpdate | None
    edge_bwd: EdgeUpdate | None
    skip: Linear | None
    config: ScaleGMNConfig = eqx.field(static=True)
    head_layer: bool = eqx.field(static=True)

    def __init__(self, cfg: ScaleGMNConfig, edge_update: bool, *, keys: InitKeys,
                 dtype: jnp.dtype = jnp.float32, head_layer: bool = False) -> None:
        d = cfg.d_hidden
        self.config = cfg
        self.head_layer = head_layer
        self.fwd = Direction(cfg, keys=keys, dtype=dtype)
        self.bwd = Direction(cfg, keys=keys, dtype=dtype) if cfg.bidirectional else None
        self.upd = _scale_eq(cfg, (3 if cfg.bidirectional else 2) * d, 1 if head_layer else d, keys=keys, dtype=dtype)
        d_edge = cfg.d_edge_in if head_layer else None
        self.edge = EdgeUpdate(cfg, keys=keys, dtype=dtype, d_out=d_edge) if edge_update else None
        self.edge_bwd = (EdgeUpdate(cfg, keys=keys.extra, dtype=dtype, d_out=d_edge)
                         if edge_update and cfg.backward_edge_state else None)
        self.skip = (Linear(d, d, bias=False, keys=keys.extra, dtype=dtype)
                     if cfg.skip_linear and not head_layer else None)

    def backward_rescale(self, s: Array, e: Array, n_src: Array, n_dst: Array) -> Array:
        """`ReScaleEq_bwd(h_i, e_ji) * c_ji` on edges, from `s = a h_i` (gathered) and `e = e_ji`.

        `c_ji = n_j / n_i` is a source factor `n_src` (`||h_j||^2` where the sender's group has
        continuous multipliers, else 1) over a target factor `n_dst` (the same with
        `max(||h_i||, norm_eps)^2`); sign and trivial nodes need no correction (`q^2 = 1`).
        """
        assert self.bwd is not None
        return s * self.bwd.rescale.b(e) * (n_src / n_dst)

    def __call__(self, h: Array, e: Any, g: Any, grp: Array, keys: DropoutKeys, *,
                 io: Array | None = None, pos: Array | None = None, e_bwd: Any = None) -> tuple[Array, Any, Any]:
        """Apply the layer.

        Args:
            h: node states `[N, d]` (a dense layout: `[B, N, d]`).
            e: edge states in the layout of `g`.
            g: the graph layout (`scalegmn.jax.model`).
            grp: the nodes' effective group codes, shaped like `h` without its last axis.
            keys: dropout keys.
            io: the io MLP of each node's rows (`io_mlps`; `-1` none), shaped like `grp`.
            pos: each node's positional vector (`positional_features`; broadcastable against `h`).
            e_bwd: the backward edge states (`backward_edge_state`).

        Returns:
            The new node states, edge states and backward edge states (`None` without them).
        """
        cfg = self.config
        d, eps, mode = cfg.d_hidden, cfg.norm_eps, cfg.sign_canon
        sym = mode != "canonicalize"
        recv = [h] if cfg.message_receiver else []  # the receiver's state enters every message
        off = d * len(recv)  # where the edge part's columns start in the message's first Linears
        fwd = self.fwd

        def extras(msg: ScaleEq, at: Any) -> list[Array]:
            """The receivers' io indices and positional parts, gathered to the rows by `at`."""
            out = [] if io is None else [at(io)]
            return out if pos is None else [*out, at(msg.pos_part(pos))]

        def split(rest: tuple[Array, ...]) -> tuple[dict[str, Array], tuple[Array, ...]]:
            opt: dict[str, Array] = {}
            if io is not None:
                opt["io"], rest = rest[0], rest[1:]
            if pos is not None:
                opt["pos"], rest = rest[0], rest[1:]
            return opt, rest

        def fwd_msg(gr: Array, s: Array, ee: Array, *rest: Array) -> Array:
            opt, nv = split(rest)
            return fwd.msg.rows(gr, nv, [s * fwd.rescale.b(ee)], off, eps, sym, keys, mode=mode, **opt)

        nodes = fwd.msg.node_part(recv, not sym)
        parts = [h, g.aggregate("dst", fwd_msg, g.at_dst(grp), g.at_src(fwd.rescale.a(h)), e,
                                *extras(fwd.msg, g.at_dst), *(g.at_dst(v) for v in nodes))]
        if self.bwd is not None:
            bwd = self.bwd
            sq = jnp.sum(h * h, -1, keepdims=True)
            cont = normalises(grp)[..., None]
            n_src = jnp.where(cont, sq, 1.0)
            n_dst = jnp.where(cont, jnp.maximum(sq, eps**2), 1.0)

            def bwd_msg(gr: Array, s: Array, ee: Array, a: Array, c: Array, *rest: Array) -> Array:
                opt, nv = split(rest)
                return bwd.msg.rows(gr, nv, [self.backward_rescale(s, ee, a, c)], off, eps, sym, keys,
                                    mode=mode, **opt)

            nodes = bwd.msg.node_part(recv, not sym)
            parts.append(g.aggregate("src", bwd_msg, g.at_src(grp), g.at_dst(bwd.rescale.a(h)),
                                     e if e_bwd is None else e_bwd, g.at_src(n_src), g.at_dst(n_dst),
                                     *extras(bwd.msg, g.at_src), *(g.at_src(v) for v in nodes)))
        hn = self.upd(jnp.concatenate(parts, -1), grp, eps, sym, keys, mode=mode, io=io,
                      pos=None if pos is None else self.upd.pos_part(pos))
        skip = cfg.skip_connections and not self.head_layer
        if skip:
            hn = hn + (h if self.skip is None else self.skip(h))
        if self.edge is None:
            return hn, e, e_bwd
        # The head layer's node update writes the head's channel: its edge update reads the
        # layer's input states (width d).
        hr = h if self.head_layer else hn
        e = self._edge_update(self.edge, hr, e, g, grp, keys, skip)
        if self.edge_bwd is not None:
            e_bwd = self._edge_update(self.edge_bwd, hr, e_bwd, g, grp, keys, skip)
        return hn, e, e_bwd

    def _edge_update(self, edge: EdgeUpdate, h: Array, e: Any, g: Any, grp: Array, keys: DropoutKeys,
                     skip: bool) -> Any:
        """`(gamma e_ji) * mlp([ScaleInv(h_j), ScaleInv(h_i)])` (`+ e_ji` with `skip`) from node states `h`."""
        cfg = self.config
        d, eps = cfg.d_hidden, cfg.norm_eps
        if edge.inv is None:
            inv = sign_canonical(h, grp, eps)
        else:
            inv = scale_inv(edge.inv, h, grp, eps, cfg.sign_canon != "canonicalize", keys)
        w0 = edge.mlp.lin[0].weight  # first Linear of [inv_src, inv_dst], applied per node

        def edge_update(ee: Array, a: Array, c: Array) -> Array:
            en = edge.gamma(ee) * edge.mlp.tail(a + c, keys)
            return en + ee if skip else en

        return g.emap(edge_update, e, g.at_src(inv @ w0[:, :d].T), g.at_dst(inv @ w0[:, d:].T))
