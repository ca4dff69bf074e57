"""One message-passing layer of ScaleGMN / ScaleGMN-B (`layers.{t}` in `docs/model.md`).

The computation is written once over "node sets" and "edge blocks": in the dense layout
a node set is one graph layer `[B, n_k, d]` and an edge block one weight layer
`[B, n_l, n_{l-1}, d]` (gathers are broadcasts, aggregations are sums over an axis); in the
disjoint-union layout there is one node set `[N, d]` and one edge block `[E, d]` (gathers
are `index_select`, aggregations `index_add`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scalegmn.weightgraph import ScaleGMNConfig
from torch import Tensor, nn

from . import fused as fz
from .blocks import MLP, ReScaleEq, ScaleEq, scale_eq, scale_inv
from .groups import Grp

Fn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class EdgeBlock:
    """A set of edges between node set `s` (sources) and node set `t` (targets).

    Attributes:
        s, t: indices of the source and target node sets.
        src, dst: node-set tensor `[..., c]` -> broadcastable onto the edges.
        to_src, to_dst: edge tensor -> summed into the source / target node set.
    """

    s: int
    t: int
    src: Fn
    dst: Fn
    to_src: Fn
    to_dst: Fn


class Direction(nn.Module):
    """A message direction: `rescale` (ReScaleEq) and `msg` (ScaleEq)."""

    def __init__(self, cfg: ScaleGMNConfig) -> None:
        super().__init__()
        d = cfg.d_hidden
        self.rescale = ReScaleEq(d)
        self.msg = ScaleEq(2 * d if cfg.message_receiver else d, d, cfg.mlp_width, cfg.mlp_layers,
                           cfg.mlp_activation, cfg.layer_norm, cfg.dropout)


class EdgeUpdate(nn.Module):
    """Edge update parameters: `gamma`, the node ScaleInv `inv` and the edge `mlp`."""

    def __init__(self, cfg: ScaleGMNConfig) -> None:
        super().__init__()
        d = cfg.d_hidden
        self.gamma = nn.Linear(d, d, bias=False)
        self.inv = MLP(d, cfg.mlp_width, d, cfg.mlp_layers, cfg.mlp_activation, cfg.layer_norm,
                       cfg.dropout)
        self.mlp = MLP(2 * d, cfg.mlp_width, d, cfg.mlp_layers, cfg.mlp_activation,
                       cfg.layer_norm, cfg.dropout)


class GMNLayer(nn.Module):
    """Parameters of one layer: `fwd`, `bwd` (bidirectional), `upd`, `edge` (edge update)."""

    def __init__(self, cfg: ScaleGMNConfig, edge_update: bool) -> None:
        super().__init__()
        d = cfg.d_hidden
        self.cfg = cfg
        self.fwd = Direction(cfg)
        self.bwd = Direction(cfg) if cfg.bidirectional else None
        self.upd = ScaleEq((3 if cfg.bidirectional else 2) * d, d, cfg.mlp_width, cfg.mlp_layers,
                           cfg.mlp_activation, cfg.layer_norm, cfg.dropout)
        self.edge = EdgeUpdate(cfg) if edge_update else None

    def backward_rescale(self, hs: Tensor, ht: Tensor, y: Tensor, blk: EdgeBlock, gs: Grp, gt: Grp
                         ) -> Tensor:
        """`ReScaleEq_bwd(h_i, e_ji) * c_ji` on the edges of `blk` (`y = b e_ji`).

        `c_ji = n_j / n_i` splits into a source factor `n_j` (`||h_j||^2` where the sender's
        group has continuous multipliers, else 1) and a target factor `n_i` (the same with
        `max(||h_i||, norm_eps)^2`); sign and trivial nodes need no correction (`q^2 = 1`).
        """
        assert self.bwd is not None
        a = F.linear(ht, self.bwd.rescale.a.weight)
        if gt.any_norm:
            sq_t = ht.square().sum(-1, keepdim=True).clamp_min(self.cfg.norm_eps**2)
            a = a / _where_norm(gt.norm, sq_t)
        out = blk.dst(a) * y
        if gs.any_norm:
            out = out * blk.src(_where_norm(gs.norm, hs.square().sum(-1, keepdim=True)))
        return out

    def forward(
        self, h: list[Tensor], e: list[Tensor], grp: list[Grp], blocks: list[EdgeBlock],
        fused: bool = False,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Apply the layer.

        Args:
            h: node states per node set, `[..., d]`.
            e: edge states per block, `[..., d]`.
            grp: groups per node set (rows shaped like `h`).
            blocks: the edge blocks (same order as `e`).
            fused: use the fused dense kernels (dense blocks `[B, n_t, n_s, d]`, one
                constant group per node set, see `fusable`).

        Returns:
            The new node states and edge states.
        """
        if fused:
            agg_f, agg_b = self._messages_fused(h, e, grp, blocks)
            gammas: list[Tensor] = []
        else:
            agg_f, agg_b, gammas = self._messages(h, e, grp, blocks)
        return self._update(h, e, grp, blocks, agg_f, agg_b, gammas, fused)

    def fusable(self) -> bool:
        """Whether the configuration has the fused kernels' shape of MLPs."""
        cfg = self.cfg
        return (cfg.mlp_layers == 1 and not cfg.layer_norm and cfg.sign_canon == "symmetrize"
                and (cfg.dropout == 0 or not self.training))

    def edge_linear(self, eb: Tensor) -> Tensor:
        """The edge-side Linears in one matmul: `[..., d] -> [..., k d]`.

        Columns: `b e` of the forward ReScaleEq, then of the backward one (bidirectional),
        then the edge update's `gamma e` (with edge updates).
        """
        ws = [self.fwd.rescale.b.weight]
        if self.bwd is not None:
            ws.append(self.bwd.rescale.b.weight)
        if self.edge is not None:
            ws.append(self.edge.gamma.weight)
        return F.linear(eb, torch.cat(ws) if len(ws) > 1 else ws[0])

    def message_fwd(self, hs: Tensor, ht: Tensor, y: Tensor, blk: EdgeBlock, gt: Grp) -> Tensor:
        """Forward messages `ScaleEq_fwd([h_i, ReScaleEq_fwd(h_j, e_ji)])` on the edges of `blk`.

        Args:
            hs, ht: source and target node states `[..., d]` (gathered onto the edges by
                `blk.src` / `blk.dst`).
            y: `edge_linear` of the block's edges.
            blk: the edge block.
            gt: the targets' groups (rows shaped like `ht`).

        Returns:
            `[..., d]` per edge.
        """
        cfg = self.cfg
        d = cfg.d_hidden
        r = blk.src(F.linear(hs, self.fwd.rescale.a.weight)) * y[..., :d]
        return scale_eq(self.fwd.msg, ht if cfg.message_receiver else None, blk.dst, r,
                        gt.map(blk.dst), cfg.norm_eps, cfg.sign_canon == "symmetrize")

    def message_bwd(self, hs: Tensor, ht: Tensor, y: Tensor, blk: EdgeBlock, gs: Grp, gt: Grp
                    ) -> Tensor:
        """Backward messages (target to source) on the edges of `blk`; arguments as `message_fwd`.

        Returns:
            `[..., d]` per edge, to be summed into the sources.
        """
        cfg = self.cfg
        d = cfg.d_hidden
        assert self.bwd is not None
        rb = self.backward_rescale(hs, ht, y[..., d : 2 * d], blk, gs, gt)
        return scale_eq(self.bwd.msg, hs if cfg.message_receiver else None, blk.src, rb,
                        gs.map(blk.src), cfg.norm_eps, cfg.sign_canon == "symmetrize")

    def update_node(self, hk: Tensor, agg: list[Tensor], g: Grp) -> Tensor:
        """Node update `ScaleEq_upd([h_i, m_i(, m_i^bwd)])` (plus the skip connection).

        Args:
            hk: node states `[..., d]`.
            agg: the summed messages per direction, each `[..., d]`.
            g: the nodes' groups.
        """
        cfg = self.cfg
        out = scale_eq(self.upd, torch.cat([hk, *agg], -1), _ident, None, g, cfg.norm_eps,
                       cfg.sign_canon == "symmetrize")
        return out + hk if cfg.skip_connections else out

    def edge_inputs(self, hk: Tensor, g: Grp) -> tuple[Tensor, Tensor]:
        """The edge update's first Linear on `ScaleInv(h)` of new node states, split into its
        source and target halves: two `[..., mlp_width]`."""
        assert self.edge is not None
        cfg = self.cfg
        d = cfg.d_hidden
        w1 = self.edge.mlp.linear(0).weight
        inv = scale_inv(self.edge.inv, hk, g, cfg.norm_eps, cfg.sign_canon == "symmetrize")
        return F.linear(inv, w1[:, :d]), F.linear(inv, w1[:, d:])

    def update_edge(self, eb: Tensor, gamma: Tensor, pre: Tensor) -> Tensor:
        """Edge update `(gamma e) * MLP([ScaleInv(h_j), ScaleInv(h_i)])` (plus the skip).

        Args:
            eb: edge states `[..., d]`.
            gamma: `gamma e`, the last `d` columns of `edge_linear`.
            pre: the source half plus the target half of `edge_inputs` on each edge.
        """
        assert self.edge is not None
        out = gamma * self.edge.mlp.tail(pre)
        return out + eb if self.cfg.skip_connections else out

    def _messages(self, h: list[Tensor], e: list[Tensor], grp: list[Grp], blocks: list[EdgeBlock]
                  ) -> tuple[list[Tensor | None], list[Tensor | None], list[Tensor]]:
        d = self.cfg.d_hidden
        agg_f: list[Tensor | None] = [None] * len(h)
        agg_b: list[Tensor | None] = [None] * len(h)
        gammas: list[Tensor] = []
        for blk, eb in zip(blocks, e, strict=True):
            y = self.edge_linear(eb)
            hs, ht = h[blk.s], h[blk.t]
            m = self.message_fwd(hs, ht, y, blk, grp[blk.t])
            agg_f[blk.t] = _add(agg_f[blk.t], blk.to_dst(m))
            if self.bwd is not None:
                mb = self.message_bwd(hs, ht, y, blk, grp[blk.s], grp[blk.t])
                agg_b[blk.s] = _add(agg_b[blk.s], blk.to_src(mb))
            if self.edge is not None:
                gammas.append(y[..., -d:])
        return agg_f, agg_b, gammas

    def _messages_fused(self, h: list[Tensor], e: list[Tensor], grp: list[Grp],
                        blocks: list[EdgeBlock]) -> tuple[list[Tensor | None], list[Tensor | None]]:
        cfg = self.cfg
        d, eps = cfg.d_hidden, cfg.norm_eps
        dirs = [self.fwd] if self.bwd is None else [self.fwd, self.bwd]
        w_y = torch.cat([dr.rescale.b.weight for dr in dirs])
        params = []
        for dr in dirs:
            wg, w0 = dr.msg.gamma.weight, dr.msg.inv.linear(0).weight
            if cfg.message_receiver:
                w_r, w_n = torch.cat([wg[:, d:], w0[:, d:]]), torch.cat([wg[:, :d], w0[:, :d]])
            else:
                w_r, w_n = torch.cat([wg, w0]), None
            lin0, lin1 = dr.msg.inv.linear(0), dr.msg.inv.linear(1)
            params.append((w_n, [w_r, lin0.bias, lin1.weight, lin1.bias]))
        sq = [hk.square().sum(-1) for hk in h]
        agg_f: list[Tensor | None] = [None] * len(h)
        agg_b: list[Tensor | None] = [None] * len(h)
        for blk, eb in zip(blocks, e, strict=True):
            s, t = blk.s, blk.t
            hs, ht = h[s], h[t]
            gs, gt = grp[s], grp[t]
            w_n, rest = params[0]
            flat: list[Tensor | None] = [
                F.linear(hs, self.fwd.rescale.a.weight),
                None if w_n is None else F.linear(ht, w_n),
                sq[t] if (gt.norm and w_n is not None) else None,
                None,
                *rest,
            ]
            meta = [fz.Dir(2, 1, bool(gt.norm), bool(gt.flip), eps)]
            if self.bwd is not None:
                w_n, rest = params[1]
                a = F.linear(ht, self.bwd.rescale.a.weight)
                # c_ji as in `backward_rescale` (one constant group per node set here).
                if gt.norm:
                    a = a / sq[t].clamp_min(eps**2).unsqueeze(-1)
                cr = sq[s] if gs.norm else None
                flat += [a, None if w_n is None else F.linear(hs, w_n),
                         sq[s] if (gs.norm and w_n is not None) else None, cr, *rest]
                meta.append(fz.Dir(1, 2, bool(gs.norm), bool(gs.flip), eps))
            outs = fz.MessageFn.apply(fz.MsgMeta(tuple(meta), cfg.mlp_activation), eb, w_y, *flat)
            agg_f[t] = _add(agg_f[t], outs[0])
            if self.bwd is not None:
                agg_b[s] = _add(agg_b[s], outs[1])
        return agg_f, agg_b

    def _update(self, h: list[Tensor], e: list[Tensor], grp: list[Grp], blocks: list[EdgeBlock],
                agg_f: list[Tensor | None], agg_b: list[Tensor | None], gammas: list[Tensor],
                fused: bool) -> tuple[list[Tensor], list[Tensor]]:
        cfg = self.cfg
        new_h = []
        for k, hk in enumerate(h):
            agg = [_or_zeros(agg_f[k], hk)]
            if self.bwd is not None:
                agg.append(_or_zeros(agg_b[k], hk))
            new_h.append(self.update_node(hk, agg, grp[k]))
        if self.edge is None:
            return new_h, e
        p_src, p_dst = zip(*(self.edge_inputs(hk, g) for hk, g in zip(new_h, grp, strict=True)),
                           strict=True)
        if fused:
            lin0, lin1 = self.edge.mlp.linear(0), self.edge.mlp.linear(1)
            return new_h, [
                fz.EdgeUpdateFn.apply(cfg.mlp_activation, cfg.skip_connections, eb, p_src[blk.s],
                                      p_dst[blk.t], self.edge.gamma.weight, lin0.bias,
                                      lin1.weight, lin1.bias)
                for blk, eb in zip(blocks, e, strict=True)
            ]
        return new_h, [
            self.update_edge(eb, gam, blk.src(p_src[blk.s]) + blk.dst(p_dst[blk.t]))
            for blk, eb, gam in zip(blocks, e, gammas, strict=True)
        ]


def _where_norm(norm: bool | Tensor, sq: Tensor) -> Tensor:
    """`sq` on rows whose group normalises (scale, nonzero), 1 elsewhere."""
    if isinstance(norm, Tensor):
        return torch.where(norm > 0, sq, torch.ones_like(sq))
    return sq


def _ident(x: Tensor) -> Tensor:
    return x


def _add(a: Tensor | None, b: Tensor) -> Tensor:
    return b if a is None else a + b


def _or_zeros(a: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if a is None else a
