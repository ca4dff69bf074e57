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
from .blocks import MLP, ReScaleEq, ScaleEq, canon_state, scale_eq, scale_inv
from .groups import Grp

# The options of `docs/model.md` beyond today's model, with their default values: any other
# value turns off the fused kernels.
OPTION_DEFAULTS: dict[str, object] = {
    name: ScaleGMNConfig.model_fields[name].default
    for name in ("io_mlps", "edge_inv", "skip_linear", "readout_io", "layer_dropout",
                 "backward_edge_state", "positional_features", "per_group_inv",
                 "edge_positional_encoding", "head_in_last_layer")
}


def non_default_options(cfg: ScaleGMNConfig) -> list[str]:
    """The new options set away from their defaults (with `sign_canon="symmetrize_phi"` and
    `readout="io_nodes"`)."""
    out = [name for name, v in OPTION_DEFAULTS.items() if getattr(cfg, name) != v]
    if cfg.sign_canon == "symmetrize_phi":
        out.insert(0, "sign_canon='symmetrize_phi'")
    if cfg.readout == "io_nodes":
        out.append("readout='io_nodes'")
    return out


def has_rho(cfg: ScaleGMNConfig) -> bool:
    """Whether the ScaleInvs get the `symmetrize_phi` MLP `rho` (where sign groups can occur)."""
    return cfg.sign_canon == "symmetrize_phi" and cfg.symmetry in ("sign", "auto", "hetero")


def scale_eq_module(cfg: ScaleGMNConfig, d_in: int, d_out: int) -> ScaleEq:
    """A ScaleEq of a message or node update with the configuration's options."""
    return ScaleEq(d_in, d_out, cfg.mlp_width, cfg.mlp_layers, cfg.mlp_activation, cfg.layer_norm,
                   cfg.dropout, d_pos=cfg.d_hidden if cfg.positional_features else 0,
                   rho=has_rho(cfg), n_io=cfg.io_mlps, inv_scale=cfg.per_group_inv)

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


@dataclass(frozen=True)
class Need:
    """What is read of a layer's outputs: node sets `nodes`, edge blocks `edges` (the edge
    states, and the backward ones with `backward_edge_state`)."""

    nodes: frozenset[int]
    edges: frozenset[int]


class Direction(nn.Module):
    """A message direction: `rescale` (ReScaleEq) and `msg` (ScaleEq)."""

    def __init__(self, cfg: ScaleGMNConfig) -> None:
        super().__init__()
        d = cfg.d_hidden
        self.rescale = ReScaleEq(d)
        self.msg = scale_eq_module(cfg, 2 * d if cfg.message_receiver else d, d)


class EdgeUpdate(nn.Module):
    """Edge update parameters: `gamma`, the node ScaleInv `inv` and the edge `mlp`.

    Args:
        cfg: the configuration (`edge_inv="canon"`: no `inv`).
        d_out: output width (`d_hidden`; `d_edge_in` for `head_in_last_layer`'s last layer).
    """

    inv: MLP | None

    def __init__(self, cfg: ScaleGMNConfig, d_out: int | None = None) -> None:
        super().__init__()
        d = cfg.d_hidden
        d_out = d if d_out is None else d_out
        self.gamma = nn.Linear(d, d_out, bias=False)
        self.inv = (MLP(d, cfg.mlp_width, d, cfg.mlp_layers, cfg.mlp_activation, cfg.layer_norm,
                        cfg.dropout) if cfg.edge_inv == "mlp" else None)
        self.mlp = MLP(2 * d, cfg.mlp_width, d_out, cfg.mlp_layers, cfg.mlp_activation,
                       cfg.layer_norm, cfg.dropout)


class GMNLayer(nn.Module):
    """Parameters of one layer: `fwd`, `bwd` (bidirectional), `upd`, `edge` (edge update),
    `edge_bwd` (`backward_edge_state`), `skip` (`skip_linear`).

    Args:
        cfg: the configuration.
        edge_update: whether the layer updates edge states.
        last: the model's last layer (with `head_in_last_layer` it writes the head's outputs:
            one node channel, `d_edge_in` edge channels, no skip connections).
    """

    skip: nn.Linear | None

    def __init__(self, cfg: ScaleGMNConfig, edge_update: bool, last: bool = False) -> None:
        super().__init__()
        d = cfg.d_hidden
        self.cfg = cfg
        self.head_out = cfg.head_in_last_layer and last
        self.skip_on = cfg.skip_connections and not self.head_out
        self.fwd = Direction(cfg)
        self.bwd = Direction(cfg) if cfg.bidirectional else None
        self.upd = scale_eq_module(cfg, (3 if cfg.bidirectional else 2) * d,
                                   1 if self.head_out else d)
        d_edge = cfg.d_edge_in if self.head_out else d
        self.edge = EdgeUpdate(cfg, d_edge) if edge_update else None
        # backward messages read their own edge state (every layer, with or without an edge
        # update of its own)
        self.bes = cfg.backward_edge_state and cfg.bidirectional
        self.edge_bwd = EdgeUpdate(cfg, d_edge) if edge_update and self.bes else None
        self.skip = (nn.Linear(d, d, bias=False)
                     if cfg.skip_linear and cfg.skip_connections and not self.head_out else None)

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
            The new node states and edge states (with `backward_edge_state` the backward
            edge states start as `e`; use `step` to carry them).
        """
        h, e, _ = self.step(h, e, None, grp, blocks, fused)
        return h, e

    def step(
        self, h: list[Tensor], e: list[Tensor], e_b: list[Tensor] | None, grp: list[Grp],
        blocks: list[EdgeBlock], fused: bool = False, need: Need | None = None,
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        """`forward` with the backward edge states `e_b` of `backward_edge_state`.

        Args:
            h, e, grp, blocks, fused: as `forward`.
            e_b: backward edge states per block (`None`: the same as `e`); ignored without
                `backward_edge_state`.
            need: the outputs read afterwards (`None`: all). The layer then computes only
                what they depend on (`live_sets`); the other node sets and edge blocks keep
                their input states (which nobody reads). Ignored with dropout inside the MLPs
                in training mode, where skipped work would shift the random stream.

        Returns:
            The new node states, edge states and backward edge states (`None` without
            `backward_edge_state`).
        """
        if not self.bes:
            e_b = None
        elif e_b is None:
            e_b = e
        if need is not None and self.cfg.dropout > 0 and self.training:
            need = None
        upd: frozenset[int] | None = None
        edges: frozenset[int] | None = None
        if need is not None:
            upd, edges = self.live_sets(need, blocks), need.edges
        if fused:
            agg_f, agg_b = self._messages_fused(h, e, grp, blocks)
            gammas: list[Tensor | None] = []
            gammas_b: list[Tensor | None] = []
        else:
            agg_f, agg_b, gammas, gammas_b = self._messages(h, e, e_b, grp, blocks, upd, edges)
        return self._update(h, e, e_b, grp, blocks, agg_f, agg_b, gammas, gammas_b, fused, upd,
                            edges)

    def live_sets(self, need: Need, blocks: list[EdgeBlock]) -> frozenset[int]:
        """The node sets whose update `need` depends on: the read ones and, with an edge
        update, the ends of the read edge blocks (unless it reads the input states)."""
        upd = set(need.nodes)
        if self.edge is not None and not self.head_out:
            for b in need.edges:
                upd |= {blocks[b].s, blocks[b].t}
        return frozenset(upd)

    def need_before(self, need: Need, blocks: list[EdgeBlock]) -> Need:
        """The inputs of this layer that its outputs `need` read (for the layer before it)."""
        upd = self.live_sets(need, blocks)
        nodes, edges = set(upd), set(need.edges)
        for b, blk in enumerate(blocks):
            if blk.t in upd or (self.bwd is not None and blk.s in upd) or (
                    self.head_out and self.edge is not None and b in need.edges):
                nodes |= {blk.s, blk.t}
                edges.add(b)
        return Need(frozenset(nodes), frozenset(edges))

    def fusable(self) -> bool:
        """Whether the configuration has the fused kernels' shape of MLPs (and no new option)."""
        cfg = self.cfg
        return (cfg.mlp_layers == 1 and not cfg.layer_norm and cfg.sign_canon == "symmetrize"
                and (cfg.dropout == 0 or not self.training) and not non_default_options(cfg))

    @property
    def d_gamma(self) -> int:
        """Output width of the edge update (`0` without one)."""
        return 0 if self.edge is None else self.edge.gamma.weight.shape[0]

    def edge_linear(self, eb: Tensor) -> Tensor:
        """The edge-side Linears in one matmul: `[..., d] -> [..., k d]`.

        Columns: `b e` of the forward ReScaleEq, then of the backward one (bidirectional,
        unless `backward_edge_state`, where it reads the backward state: `edge_linear_bwd`),
        then the edge update's `gamma e` (with edge updates; `d_gamma` columns).
        """
        ws = [self.fwd.rescale.b.weight]
        if self.bwd is not None and not self.bes:
            ws.append(self.bwd.rescale.b.weight)
        if self.edge is not None:
            ws.append(self.edge.gamma.weight)
        return F.linear(eb, torch.cat(ws) if len(ws) > 1 else ws[0])

    def edge_linear_bwd(self, eb: Tensor) -> Tensor:
        """`backward_edge_state`: `b e_b` of the backward ReScaleEq, then `edge_bwd.gamma e_b`
        (with an edge update)."""
        assert self.bwd is not None
        w = self.bwd.rescale.b.weight
        if self.edge_bwd is not None:
            w = torch.cat([w, self.edge_bwd.gamma.weight])
        return F.linear(eb, w)

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
        # `y` may be just the `b e` columns (`_messages` splits `edge_linear`): no slice then
        # (a slice's gradient is a zero-filled buffer of the full width)
        r = blk.src(F.linear(hs, self.fwd.rescale.a.weight)) * (y if y.shape[-1] == d else y[..., :d])
        return scale_eq(self.fwd.msg, ht if cfg.message_receiver else None, blk.dst, r,
                        gt.map(blk.dst), cfg.norm_eps, cfg.sign_canon)

    def message_bwd(self, hs: Tensor, ht: Tensor, yb: Tensor, blk: EdgeBlock, gs: Grp, gt: Grp
                    ) -> Tensor:
        """Backward messages (target to source) on the edges of `blk`.

        Args:
            hs, ht, blk, gt: as `message_fwd`.
            yb: `b e` of the backward ReScaleEq on the block's edges `[..., d]` (the columns
                `d:2d` of `edge_linear`, or of `edge_linear_bwd` on the backward state).
            gs: the sources' groups.

        Returns:
            `[..., d]` per edge, to be summed into the sources.
        """
        cfg = self.cfg
        assert self.bwd is not None
        rb = self.backward_rescale(hs, ht, yb, blk, gs, gt)
        return scale_eq(self.bwd.msg, hs if cfg.message_receiver else None, blk.src, rb,
                        gs.map(blk.src), cfg.norm_eps, cfg.sign_canon)

    def update_node(self, hk: Tensor, agg: list[Tensor], g: Grp) -> Tensor:
        """Node update `ScaleEq_upd([h_i, m_i(, m_i^bwd)])` (plus the skip connection).

        Args:
            hk: node states `[..., d]`.
            agg: the summed messages per direction, each `[..., d]`.
            g: the nodes' groups.
        """
        cfg = self.cfg
        out = scale_eq(self.upd, torch.cat([hk, *agg], -1), _ident, None, g, cfg.norm_eps,
                       cfg.sign_canon)
        if not self.skip_on:
            return out
        return out + (hk if self.skip is None else self.skip(hk))

    def edge_inputs(self, hk: Tensor, g: Grp, mod: EdgeUpdate | None = None
                    ) -> tuple[Tensor, Tensor]:
        """The edge update's first Linear on `ScaleInv(h)` (or `c(h)` with `edge_inv="canon"`)
        of new node states, split into its source and target halves: two `[..., mlp_width]`.

        `mod` is the edge update (default `edge`; `edge_bwd` for the backward state)."""
        mod = self.edge if mod is None else mod
        assert mod is not None
        cfg = self.cfg
        d = cfg.d_hidden
        w1 = mod.mlp.linear(0).weight
        if mod.inv is None:
            inv = canon_state(hk, g, cfg.norm_eps)
        else:
            inv = scale_inv(mod.inv, hk, g, cfg.norm_eps, cfg.sign_canon != "canonicalize")
        return F.linear(inv, w1[:, :d]), F.linear(inv, w1[:, d:])

    def update_edge(self, eb: Tensor, gamma: Tensor, pre: Tensor, mod: EdgeUpdate | None = None,
                    biased: bool = False) -> Tensor:
        """Edge update `(gamma e) * MLP([ScaleInv(h_j), ScaleInv(h_i)])` (plus the skip).

        Args:
            eb: edge states `[..., d]`.
            gamma: `gamma e`, the last `d_gamma` columns of `edge_linear`.
            pre: the source half plus the target half of `edge_inputs` on each edge.
            mod: the edge update (default `edge`; `edge_bwd` for the backward state).
            biased: `pre` includes the bias of the MLP's first Linear.
        """
        mod = self.edge if mod is None else mod
        assert mod is not None
        out = gamma * mod.mlp.tail(pre, biased=biased)
        return out + eb if self.skip_on else out

    def _messages(self, h: list[Tensor], e: list[Tensor], e_b: list[Tensor] | None,
                  grp: list[Grp], blocks: list[EdgeBlock], upd: frozenset[int] | None = None,
                  edges: frozenset[int] | None = None
                  ) -> tuple[list[Tensor | None], list[Tensor | None], list[Tensor | None],
                             list[Tensor | None]]:
        d = self.cfg.d_hidden
        agg_f: list[Tensor | None] = [None] * len(h)
        agg_b: list[Tensor | None] = [None] * len(h)
        gammas: list[Tensor | None] = [None] * len(blocks)
        gammas_b: list[Tensor | None] = [None] * len(blocks)
        for k, (blk, eb) in enumerate(zip(blocks, e, strict=True)):
            # only the messages into the updated sets `upd`, the edge updates of `edges`
            live_f = upd is None or blk.t in upd
            live_b = self.bwd is not None and (upd is None or blk.s in upd)
            live_e = self.edge is not None and (edges is None or k in edges)
            if not (live_f or live_b or live_e):
                continue
            # one product for the edge-side Linears, split into its parts (whose gradients
            # are then concatenated, not each zero-filled to the full width)
            y = self.edge_linear(eb)
            n_b = d if self.bwd is not None and not self.bes else 0
            ys = y.split([d, n_b, y.shape[-1] - d - n_b], -1)
            hs, ht = h[blk.s], h[blk.t]
            if live_f:
                m = self.message_fwd(hs, ht, ys[0], blk, grp[blk.t])
                agg_f[blk.t] = _add(agg_f[blk.t], blk.to_dst(m))
            if self.bwd is not None and (live_b or (live_e and self.edge_bwd is not None)):
                if e_b is not None:
                    yb = self.edge_linear_bwd(e_b[k])
                    if self.edge_bwd is not None:
                        yb, gam_b = yb.split([d, yb.shape[-1] - d], -1)
                        if live_e:
                            gammas_b[k] = gam_b
                else:
                    yb = ys[1]
                if live_b:
                    mb = self.message_bwd(hs, ht, yb, blk, grp[blk.s], grp[blk.t])
                    agg_b[blk.s] = _add(agg_b[blk.s], blk.to_src(mb))
            if live_e:
                gammas[k] = ys[2]
        return agg_f, agg_b, gammas, gammas_b

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

    def _update(self, h: list[Tensor], e: list[Tensor], e_b: list[Tensor] | None, grp: list[Grp],
                blocks: list[EdgeBlock], agg_f: list[Tensor | None], agg_b: list[Tensor | None],
                gammas: list[Tensor | None], gammas_b: list[Tensor | None], fused: bool,
                upd: frozenset[int] | None = None, edges: frozenset[int] | None = None
                ) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        cfg = self.cfg
        new_h = []
        for k, hk in enumerate(h):
            if upd is not None and k not in upd:
                new_h.append(hk)  # not read afterwards (see `step`)
                continue
            agg = [_or_zeros(agg_f[k], hk)]
            if self.bwd is not None:
                agg.append(_or_zeros(agg_b[k], hk))
            new_h.append(self.update_node(hk, agg, grp[k]))
        if self.edge is None:
            return new_h, e, e_b
        # The edge update reads the new node states; the head layer's are one channel, so
        # there it reads the layer's input states (`head_in_last_layer`).
        h_e = h if self.head_out else new_h
        p_src, p_dst = zip(*(self.edge_inputs(hk, g) for hk, g in zip(h_e, grp, strict=True)),
                           strict=True)
        if fused:
            lin0, lin1 = self.edge.mlp.linear(0), self.edge.mlp.linear(1)
            return new_h, [
                fz.EdgeUpdateFn.apply(cfg.mlp_activation, cfg.skip_connections, eb, p_src[blk.s],
                                      p_dst[blk.t], self.edge.gamma.weight, lin0.bias,
                                      lin1.weight, lin1.bias)
                if edges is None or k in edges else eb  # eb: not read afterwards
                for k, (blk, eb) in enumerate(zip(blocks, e, strict=True))
            ], e_b
        # the first Linear's bias joins the target halves once per node, not once per edge
        b1 = self.edge.mlp.linear(0).bias
        new_e = [
            eb if gam is None else  # not read afterwards (see `step`)
            self.update_edge(eb, gam, blk.src(p_src[blk.s]) + blk.dst(p_dst[blk.t] + b1), biased=True)
            for blk, eb, gam in zip(blocks, e, gammas, strict=True)
        ]
        if self.edge_bwd is None or e_b is None:
            return new_h, new_e, e_b
        eb_mod = self.edge_bwd
        q_src, q_dst = zip(*(self.edge_inputs(hk, g, eb_mod) for hk, g in zip(h_e, grp, strict=True)),
                           strict=True)
        b1 = eb_mod.mlp.linear(0).bias
        new_b = [
            eb if gam is None else
            self.update_edge(eb, gam, blk.src(q_src[blk.s]) + blk.dst(q_dst[blk.t] + b1), eb_mod,
                             biased=True)
            for blk, eb, gam in zip(blocks, e_b, gammas_b, strict=True)
        ]
        return new_h, new_e, new_b


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
