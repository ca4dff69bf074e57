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

from .nn import MLP, DropoutKeys, InitKeys, Linear, ReScaleEq, ScaleEq, normalises, scale_inv


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
        self.msg = ScaleEq(2 * d if cfg.message_receiver else d, d, cfg.mlp_width, cfg.mlp_layers,
                           cfg.mlp_activation, cfg.layer_norm, cfg.dropout, keys=keys, dtype=dtype)


class EdgeUpdate(eqx.Module):
    """Edge update: `e'_ij = (gamma e_ij) * mlp([ScaleInv(h_j), ScaleInv(h_i)])` (`inv` the ScaleInv).

    Args:
        cfg: the model configuration.
        keys: initialisation keys.
        dtype: parameter dtype.
    """

    gamma: Linear
    inv: MLP
    mlp: MLP

    def __init__(self, cfg: ScaleGMNConfig, *, keys: InitKeys, dtype: jnp.dtype = jnp.float32) -> None:
        d = cfg.d_hidden
        self.gamma = Linear(d, d, bias=False, keys=keys, dtype=dtype)
        self.inv = MLP(d, cfg.mlp_width, d, cfg.mlp_layers, cfg.mlp_activation, cfg.layer_norm,
                       cfg.dropout, keys=keys, dtype=dtype)
        self.mlp = MLP(2 * d, cfg.mlp_width, d, cfg.mlp_layers, cfg.mlp_activation, cfg.layer_norm,
                       cfg.dropout, keys=keys, dtype=dtype)


class GMNLayer(eqx.Module):
    """One layer: `fwd`, `bwd` (bidirectional), the node update `upd`, the edge update `edge`.

    Args:
        cfg: the model configuration.
        edge_update: whether the layer updates the edges.
        keys: initialisation keys.
        dtype: parameter dtype.
    """

    fwd: Direction
    bwd: Direction | None
    upd: ScaleEq
    edge: EdgeUpdate | None
    config: ScaleGMNConfig = eqx.field(static=True)

    def __init__(self, cfg: ScaleGMNConfig, edge_update: bool, *, keys: InitKeys,
                 dtype: jnp.dtype = jnp.float32) -> None:
        d = cfg.d_hidden
        self.config = cfg
        self.fwd = Direction(cfg, keys=keys, dtype=dtype)
        self.bwd = Direction(cfg, keys=keys, dtype=dtype) if cfg.bidirectional else None
        self.upd = ScaleEq((3 if cfg.bidirectional else 2) * d, d, cfg.mlp_width, cfg.mlp_layers,
                           cfg.mlp_activation, cfg.layer_norm, cfg.dropout, keys=keys, dtype=dtype)
        self.edge = EdgeUpdate(cfg, keys=keys, dtype=dtype) if edge_update else None

    def backward_rescale(self, s: Array, e: Array, n_src: Array, n_dst: Array) -> Array:
        """`ReScaleEq_bwd(h_i, e_ji) * c_ji` on edges, from `s = a h_i` (gathered) and `e = e_ji`.

        `c_ji = n_j / n_i` is a source factor `n_src` (`||h_j||^2` where the sender's group has
        continuous multipliers, else 1) over a target factor `n_dst` (the same with
        `max(||h_i||, norm_eps)^2`); sign and trivial nodes need no correction (`q^2 = 1`).
        """
        assert self.bwd is not None
        return s * self.bwd.rescale.b(e) * (n_src / n_dst)

    def __call__(self, h: Array, e: Any, g: Any, grp: Array, keys: DropoutKeys) -> tuple[Array, Any]:
        """Apply the layer.

        Args:
            h: node states `[N, d]` (a dense layout: `[B, N, d]`).
            e: edge states in the layout of `g`.
            g: the graph layout (`scalegmn.jax.model`).
            grp: the nodes' effective group codes, shaped like `h` without its last axis.
            keys: dropout keys.

        Returns:
            The new node and edge states.
        """
        cfg = self.config
        d, eps, sym = cfg.d_hidden, cfg.norm_eps, cfg.sign_canon == "symmetrize"
        recv = [h] if cfg.message_receiver else []  # the receiver's state enters every message
        off = d * len(recv)  # where the edge part's columns start in the message's first Linears
        fwd = self.fwd

        def fwd_msg(gr: Array, s: Array, ee: Array, *nv: Array) -> Array:
            return fwd.msg.rows(gr, nv, [s * fwd.rescale.b(ee)], off, eps, sym, keys)

        nodes = fwd.msg.node_part(recv, not sym)
        parts = [h, g.aggregate("dst", fwd_msg, g.at_dst(grp), g.at_src(fwd.rescale.a(h)), e,
                                *(g.at_dst(v) for v in nodes))]
        if self.bwd is not None:
            bwd = self.bwd
            sq = jnp.sum(h * h, -1, keepdims=True)
            cont = normalises(grp)[..., None]
            n_src = jnp.where(cont, sq, 1.0)
            n_dst = jnp.where(cont, jnp.maximum(sq, eps**2), 1.0)

            def bwd_msg(gr: Array, s: Array, ee: Array, a: Array, c: Array, *nv: Array) -> Array:
                return bwd.msg.rows(gr, nv, [self.backward_rescale(s, ee, a, c)], off, eps, sym, keys)

            nodes = bwd.msg.node_part(recv, not sym)
            parts.append(g.aggregate("src", bwd_msg, g.at_src(grp), g.at_dst(bwd.rescale.a(h)), e,
                                     g.at_src(n_src), g.at_dst(n_dst), *(g.at_src(v) for v in nodes)))
        hn = self.upd(jnp.concatenate(parts, -1), grp, eps, sym, keys)
        if cfg.skip_connections:
            hn = hn + h
        if self.edge is None:
            return hn, e
        edge = self.edge
        inv = scale_inv(edge.inv, hn, grp, eps, sym, keys)
        w0 = edge.mlp.lin[0].weight  # first Linear of [inv_src, inv_dst], applied per node

        def edge_update(ee: Array, a: Array, c: Array) -> Array:
            en = edge.gamma(ee) * edge.mlp.tail(a + c, keys)
            return en + ee if cfg.skip_connections else en

        return hn, g.emap(edge_update, e, g.at_src(inv @ w0[:, :d].T), g.at_dst(inv @ w0[:, d:].T))
