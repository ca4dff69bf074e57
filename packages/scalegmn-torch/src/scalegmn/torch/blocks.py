"""The building blocks: MLP, ScaleInv, ScaleEq, ReScaleEq (`docs/model.md`).

The modules hold parameters under the checkpoint names; the computation is in functions
that take the first Linear of an invariant MLP apart, so that work on a concatenation
`[h_i, r_ji]` is done once per node for the `h_i` part and once per edge for the `r_ji`
part (the result is the same map, with fewer multiplications).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import cast, get_args

import torch
import torch.nn.functional as F
from scalegmn.weightgraph import get_activation
from scalegmn.weightgraph.schemas import MlpActivation
from torch import Tensor, nn

from .groups import Grp

# The MLP nonlinearities, read from the activation registry (one table for every backend).
_ACT: dict[str, Callable[[Tensor], Tensor]] = {
    name: get_activation(name).torch_module(None) for name in get_args(MlpActivation)
}


class MLP(nn.Module):
    """`Linear -> [LayerNorm] -> act -> [Dropout]` repeated `n_hidden` times, then `Linear`.

    Args:
        d_in: input width.
        d_hidden: width of the hidden layers.
        d_out: output width.
        n_hidden: number of hidden layers (0: one Linear).
        activation: `"relu"`, `"silu"`, `"gelu"` (exact) or `"tanh"`.
        layer_norm: LayerNorm (eps 1e-5) before each activation.
        dropout: dropout probability after each activation.
    """

    lin: nn.ModuleList
    """The `n_hidden + 1` Linears (`nn.Linear` with bias); read them with `linear`."""
    norm: nn.ModuleList | None
    """The LayerNorms before each hidden activation, or `None`."""

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        d_out: int,
        n_hidden: int,
        activation: str,
        layer_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dims = [d_in] + [d_hidden] * n_hidden + [d_out]
        self.lin = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.norm = (
            nn.ModuleList(nn.LayerNorm(d_hidden, eps=1e-5) for _ in range(n_hidden))
            if layer_norm
            else None
        )
        self.activation = activation
        self.p = dropout

    @property
    def n_hidden(self) -> int:
        """Number of hidden layers."""
        return len(self.lin) - 1

    def linear(self, k: int) -> nn.Linear:
        """Linear `k` of the MLP (`0` reads the input)."""
        return cast(nn.Linear, self.lin[k])

    def hidden(self, k: int, pre: Tensor) -> Tensor:
        """Hidden layer `k` from its pre-activation including the bias: `[..., d_hidden]`."""
        if self.norm is not None:
            pre = self.norm[k](pre)
        out = _ACT[self.activation](pre)
        if self.p > 0:
            out = F.dropout(out, self.p, self.training)
        return out

    def tail(self, pre: Tensor, start: int = 0, biased: bool = False) -> Tensor:
        """The MLP from the output of Linear `start` without its bias (`biased`: with it,
        e.g. from `F.linear(x, W, b)`, whose fused product saves a pass): `[..., d_out]`."""
        x = pre if biased else pre + self.linear(start).bias
        for k in range(start, self.n_hidden):
            x = self.hidden(k, x)
            x = self.linear(k + 1)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP: `[..., d_in] -> [..., d_out]`."""
        lin0 = self.linear(0)
        return self.tail(F.linear(x, lin0.weight, lin0.bias), biased=True)


class ScaleEq(nn.Module):
    """Parameters of `ScaleEq_G(x) = (gamma x) * ScaleInv_G(x)` for an input of width `d_in`.

    Args:
        d_in: input width.
        d: output width.
        mlp_hidden, n_hidden, activation, layer_norm, dropout: the invariant MLPs' shape.
        d_pos: width of the positional vector appended to the invariant MLPs' inputs
            (`positional_features`; 0: none).
        rho: with a second MLP `rho: d_in -> d_in` (`sign_canon="symmetrize_phi"`).
        n_io: number of MLPs `io.{k}` for rows whose receiver is an input / output node.
        inv_scale: with an MLP `inv_scale` for positive-scaling rows (`per_group_inv`).
    """

    rho: MLP | None
    io: nn.ModuleList | None
    inv_scale: MLP | None

    def __init__(self, d_in: int, d: int, mlp_hidden: int, n_hidden: int, activation: str,
                 layer_norm: bool, dropout: float, *, d_pos: int = 0, rho: bool = False,
                 n_io: int = 0, inv_scale: bool = False) -> None:
        super().__init__()
        self.gamma = nn.Linear(d_in, d, bias=False)
        self.inv = MLP(d_in + d_pos, mlp_hidden, d, n_hidden, activation, layer_norm, dropout)
        self.rho = (MLP(d_in, mlp_hidden, d_in, n_hidden, activation, layer_norm, dropout)
                    if rho else None)
        self.io = (nn.ModuleList(MLP(d_in + d_pos, mlp_hidden, d, n_hidden, activation, layer_norm,
                                     dropout) for _ in range(n_io))
                   if n_io else None)
        self.inv_scale = (MLP(d_in + d_pos, mlp_hidden, d, n_hidden, activation, layer_norm,
                              dropout) if inv_scale else None)
        self.d_pos = d_pos

    @property
    def general(self) -> bool:
        """Whether an option beyond today's ScaleEq is in use (computed by `scale_eq_rows`)."""
        return (self.d_pos > 0 or self.rho is not None or self.io is not None
                or self.inv_scale is not None)


class ReScaleEq(nn.Module):
    """Parameters of `ReScaleEq(x, y) = (a x) * (b y)`."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.a = nn.Linear(d, d, bias=False)
        self.b = nn.Linear(d, d, bias=False)


def norm_factor(sq: Tensor, grp: Grp, eps: float) -> Tensor | None:
    """`1 / max(||x||, eps)` where the group normalises (1 elsewhere); `None` if nowhere.

    Args:
        sq: `[..., 1]` squared norms.
        grp: the rows' groups.
        eps: `norm_eps`.
    """
    if not grp.any_norm:
        return None
    # max(sqrt(sq), eps) as sqrt(max(sq, eps^2)): same value, and a zero gradient (not
    # 0 * inf = NaN) where a state is exactly zero.
    f = sq.clamp_min(eps * eps).sqrt().reciprocal()
    if isinstance(grp.norm, Tensor):
        f = torch.where(grp.norm > 0, f, torch.ones_like(f))
    return f


def max_abs_sign(x: Tensor) -> tuple[Tensor, Tensor]:
    """Largest magnitude of each row and the sign of the first entry reaching it: `[..., 1]`."""
    idx = x.abs().argmax(dim=-1, keepdim=True)
    v = x.gather(-1, idx)
    return v.abs(), torch.sign(v)


def canon_sign(parts: list[tuple[Tensor, Tensor]], grp: Grp) -> Tensor | None:
    """The canonicalising sign `s` of a concatenation, from `(max_abs, sign)` of its parts.

    Ties between parts go to the earlier part (the first entry of the concatenation);
    `s = 1` for the zero vector and for rows whose group has no sign symmetry.
    """
    if not grp.any_flip:
        return None
    m, s = parts[0]
    for m2, s2 in parts[1:]:
        take = m2 > m
        s = torch.where(take, s2, s)
        m = torch.where(take, m2, m)
    s = torch.where(s == 0, torch.ones_like(s), s)
    if isinstance(grp.flip, Tensor):
        s = torch.where(grp.flip > 0, s, torch.ones_like(s))
    return s


def inv_tail(mlp: MLP, pre: Tensor, grp: Grp, sign: Tensor | None, symmetrize: bool) -> Tensor:
    """ScaleInv from `pre = W_0 u` (the first Linear of `mlp` without bias on the canonical `u`).

    Sign groups: `MLP(u) + MLP(-u)` when `symmetrize` (with one hidden layer the two branches
    are summed before the last Linear: one matmul), else `MLP(s u)` with `s = sign`.

    Args:
        mlp: the invariant MLP.
        pre: `[..., mlp_width]` (or `[..., d_out]` without hidden layers).
        grp: the rows' groups.
        sign: canonicalising signs `[..., 1]` (canonicalize mode), else `None`.
        symmetrize: `sign_canon == "symmetrize"`.

    Returns:
        `[..., d_out]`.
    """
    if not grp.any_flip:
        return mlp.tail(pre)
    if not symmetrize:
        assert sign is not None
        return mlp.tail(pre * sign)
    flip = grp.flip
    lin0 = mlp.linear(0)
    if mlp.n_hidden == 0:
        if isinstance(flip, Tensor):
            return pre * (1 - flip) + lin0.bias * (1 + flip)
        return (2 * lin0.bias).expand_as(pre)
    if mlp.n_hidden == 1:
        a = mlp.hidden(0, pre + lin0.bias)
        b = mlp.hidden(0, lin0.bias - pre)
        last = mlp.linear(1)
        if isinstance(flip, Tensor):
            return F.linear(a + b * flip, last.weight) + last.bias * (1 + flip)
        return F.linear(a + b, last.weight, 2 * last.bias)
    a = mlp.tail(pre)
    b = mlp.tail(-pre)
    return a + b * flip if isinstance(flip, Tensor) else a + b


def _where(mask: bool | Tensor, a: Callable[[], Tensor], b: Callable[[], Tensor]) -> Tensor:
    """`a()` on rows where `mask`, `b()` elsewhere (only the needed branch for a constant)."""
    if isinstance(mask, Tensor):
        return torch.where(mask > 0, a(), b())
    return a() if mask else b()


def _scale_rows(grp: Grp) -> bool | Tensor:
    """Rows whose group normalises and does not flip (positive scaling)."""
    if isinstance(grp.norm, Tensor) or isinstance(grp.flip, Tensor):
        norm = grp.norm if isinstance(grp.norm, Tensor) else float(grp.norm)
        keep = 1 - grp.flip if isinstance(grp.flip, Tensor) else float(not grp.flip)
        out = norm * keep
        assert isinstance(out, Tensor)
        return out
    return grp.norm and not grp.flip


def canon_state(x: Tensor, grp: Grp, eps: float) -> Tensor:
    """The canonical form `c(x)` of node-level rows (`edge_inv="canon"`): `[..., d]`.

    `x / max(||x||, eps)` where the group normalises, then times the sign `s` of its
    largest-magnitude entry (first on ties, `s = 1` for zero) where the group flips.
    """
    c = x
    if grp.any_norm:
        f = norm_factor(x.square().sum(-1, keepdim=True), grp, eps)
        if f is not None:
            c = x * f
    s = canon_sign([max_abs_sign(c)], grp)
    return c if s is None else c * s


def phi_even(plus: Tensor, minus: Tensor) -> Tensor:
    """How `symmetrize_phi` combines the branches of `rho` on `c` and `-c`: their sum."""
    return plus + minus


def phi_symmetrize(rho: MLP, c: Tensor) -> Tensor:
    """`rho(c) + rho(-c)`: the sign-invariant input of `symmetrize_phi`'s `inv`.

    The two branches share the first Linear's product (`W_0 (-c) = -(W_0 c)`), and with one
    hidden layer they are summed before the last Linear: two matmuls instead of four.
    """
    pre = F.linear(c, rho.linear(0).weight)
    if rho.n_hidden != 1:
        return phi_even(rho.tail(pre), rho.tail(-pre))
    last = rho.linear(1)
    return F.linear(phi_hidden(rho, pre), last.weight, 2 * last.bias)


def phi_hidden(rho: MLP, pre: Tensor) -> Tensor:
    """A one-hidden-layer `rho`'s hidden activations on `c` and `-c`, combined by `phi_even`
    (`pre = W_0 c` without bias): `rho(c) + rho(-c) = W_1 phi_hidden + 2 b_1`."""
    b0 = rho.linear(0).bias
    return phi_even(rho.hidden(0, b0 + pre), rho.hidden(0, b0 - pre))


def phi_inv(inv: MLP, rho: MLP, c: Tensor, pos: Tensor | None) -> Tensor:
    """`inv([rho(c) + rho(-c), pos])` (`symmetrize_phi`'s ScaleInv of flip rows).

    With one hidden layer in `rho`, its last Linear and the first Linear of `inv` (nothing
    in between) act as one product `W_inv,0 W_rho,1` (one matmul per row instead of two).
    """
    n = c.shape[-1]
    w0 = inv.linear(0).weight
    if rho.n_hidden != 1 or w0.shape[0] > 2 * n:
        return split_apply(inv, phi_symmetrize(rho, c), pos)
    last = rho.linear(1)
    w0c = w0[:, :n]
    pre = F.linear(phi_hidden(rho, F.linear(c, rho.linear(0).weight)), w0c @ last.weight,
                   F.linear(2 * last.bias, w0c, inv.linear(0).bias))
    if pos is not None:
        pre = pre + F.linear(pos, w0[:, n:])
    return inv.tail(pre, biased=True)


def even_pair(mlp: MLP, pre: Tensor, shift: Tensor | None = None) -> Tensor:
    """`tail(shift + pre) + tail(shift - pre)` of `mlp`, from `pre = W_0 u` (no bias).

    `shift` (broadcastable onto `pre`, default 0) is a part of the first Linear's output
    shared by both branches (the positional features' columns). With one hidden layer the
    branches are summed before the last Linear (one matmul).
    """
    b0 = mlp.linear(0).bias if shift is None else shift + mlp.linear(0).bias
    if mlp.n_hidden == 0:
        return (2 * b0).expand_as(pre)
    if mlp.n_hidden == 1:
        last = mlp.linear(1)
        return F.linear(mlp.hidden(0, b0 + pre) + mlp.hidden(0, b0 - pre), last.weight,
                        2 * last.bias)
    lo = pre if shift is None else shift + pre
    hi = -pre if shift is None else shift - pre
    return mlp.tail(lo) + mlp.tail(hi)


def split_apply(mlp: MLP, v: Tensor, pos: Tensor | None) -> Tensor:
    """`mlp([v, pos])` with the first Linear split: the `pos` columns act on `pos` before it
    is broadcast onto the rows of `v` (`pos` `[..., d]` broadcastable; `None`: `mlp(v)`)."""
    w0, b0 = mlp.linear(0).weight, mlp.linear(0).bias
    if pos is None:
        return mlp.tail(F.linear(v, w0, b0), biased=True)
    n = v.shape[-1]
    return mlp.tail(F.linear(v, w0[:, :n], b0) + F.linear(pos, w0[:, n:]), biased=True)


def general_inv(inv: MLP, x: Tensor, grp: Grp, eps: float, sign_canon: str, *,
                rho: MLP | None = None, inv_scale: MLP | None = None,
                io: Sequence[MLP] | None = None, pos: Tensor | None = None) -> Tensor:
    """ScaleInv of materialised rows with every option of `docs/model.md`: `[..., d_out]`.

    Hidden rows read `c` (`x` normalised where the group normalises) and, with `pos`, the
    receiver's positional vector `p` appended: flip rows `inv([c, p]) + inv([-c, p])`
    (`symmetrize`), `inv([rho(c) + rho(-c), p])` (`symmetrize_phi`) or `inv([s c, p])`
    (`canonicalize`); positive-scaling rows `inv_scale([c, p])` when given; other rows
    `inv([c, p])`. Rows whose receiver is an input (output) node read `io[0]([x, p])`
    (`io[-1]([x, p])`) when `io` is given.

    Args:
        inv: the invariant MLP.
        x: rows `[..., d_in]`.
        grp: the rows' groups, receiver roles (`inp`, `out`).
        eps: `norm_eps`.
        sign_canon: `ScaleGMNConfig.sign_canon`.
        rho: the `symmetrize_phi` MLP (`None`: flip rows as `symmetrize`).
        inv_scale: the positive-scaling rows' MLP (`per_group_inv`).
        io: the input/output rows' MLPs (`io_mlps`).
        pos: positional vectors `[..., d]` broadcastable onto the rows.
    """

    def apply(mlp: MLP, v: Tensor) -> Tensor:
        return split_apply(mlp, v, pos)

    def hidden() -> Tensor:
        c = x
        if grp.any_norm:
            f = norm_factor(x.square().sum(-1, keepdim=True), grp, eps)
            if f is not None:
                c = x * f

        def plain() -> Tensor:
            if inv_scale is None or not grp.any_norm:
                return apply(inv, c)
            return _where(_scale_rows(grp), lambda: apply(inv_scale, c), lambda: apply(inv, c))

        def flipped() -> Tensor:
            if sign_canon == "canonicalize":
                s = canon_sign([max_abs_sign(c)], grp)
                assert s is not None
                return apply(inv, s * c)
            if sign_canon == "symmetrize_phi" and rho is not None:
                return phi_inv(inv, rho, c, pos)
            w0 = inv.linear(0).weight
            n = c.shape[-1]
            shift = None if pos is None else F.linear(pos, w0[:, n:])
            return even_pair(inv, F.linear(c, w0[:, :n]), shift)

        return _where(grp.flip, flipped, plain) if grp.any_flip else plain()

    if io is None or not grp.any_io:
        return hidden()
    return _where(grp.inp, lambda: apply(io[0], x),
                  lambda: _where(grp.out, lambda: apply(io[-1], x), hidden))


def scale_eq_rows(mod: ScaleEq, x: Tensor, grp: Grp, eps: float, sign_canon: str) -> Tensor:
    """`ScaleEq_G(x) = (gamma x) * ScaleInv_G(x)` of materialised rows `[..., d_in]`."""
    io = None if mod.io is None else [cast(MLP, m) for m in mod.io]
    inv = general_inv(mod.inv, x, grp, eps, sign_canon, rho=mod.rho, inv_scale=mod.inv_scale,
                      io=io, pos=grp.pos if mod.d_pos else None)
    return F.linear(x, mod.gamma.weight) * inv


def scale_inv(mlp: MLP, x: Tensor, grp: Grp, eps: float, symmetrize: bool) -> Tensor:
    """`ScaleInv_G(x)` of node-level rows `x` `[..., d_in] -> [..., d_out]`."""
    pre = F.linear(x, mlp.linear(0).weight)
    f = norm_factor(x.square().sum(-1, keepdim=True), grp, eps) if grp.any_norm else None
    if f is not None:
        pre = pre * f
    sign = None if symmetrize else canon_sign([max_abs_sign(x)], grp)
    return inv_tail(mlp, pre, grp, sign, symmetrize)


def scale_eq(
    mod: ScaleEq,
    node: Tensor | None,
    bcast: Callable[[Tensor], Tensor],
    edge: Tensor | None,
    grp: Grp,
    eps: float,
    sign_canon: str,
) -> Tensor:
    """`ScaleEq_G([bcast(node), edge])` without materialising the concatenation.

    The `node` part (`[..., n_node]` per node) goes through the first Linears once per node
    and is broadcast onto the rows by `bcast`; the `edge` part (`[..., n_edge]` per row) once
    per row. Either part may be `None`.

    With any of the options `positional_features`, `symmetrize_phi`, `io_mlps`,
    `per_group_inv` (`mod.general`) the concatenation is built and `scale_eq_rows` applies.

    Returns:
        `[..., d]` per row.
    """
    if mod.general:
        cols = [] if node is None else [bcast(node)]
        if edge is not None:
            cols.append(edge)
        if len(cols) == 2:
            shape = torch.broadcast_shapes(cols[0].shape[:-1], cols[1].shape[:-1])
            cols = [t.expand(*shape, t.shape[-1]) for t in cols]
        x = torch.cat(cols, -1) if len(cols) == 2 else cols[0]
        return scale_eq_rows(mod, x, grp, eps, sign_canon)
    symmetrize = sign_canon != "canonicalize"
    wg, w0 = mod.gamma.weight, mod.inv.linear(0).weight
    d = wg.shape[0]
    n_node = 0 if node is None else node.shape[-1]
    gp: Tensor | None = None
    sq: Tensor | None = None
    if node is not None:
        wn = torch.cat([wg[:, :n_node], w0[:, :n_node]]) if edge is not None else torch.cat([wg, w0])
        gp = bcast(F.linear(node, wn))
        if grp.any_norm:
            sq = bcast(node.square().sum(-1, keepdim=True))
    if edge is not None:
        we = torch.cat([wg[:, n_node:], w0[:, n_node:]])
        ge = F.linear(edge, we)
        gp = ge if gp is None else ge + gp
        if grp.any_norm:
            se = edge.square().sum(-1, keepdim=True)
            sq = se if sq is None else se + sq
    assert gp is not None
    g, pre = gp.split([d, gp.shape[-1] - d], -1)
    if grp.any_norm:
        assert sq is not None
        f = norm_factor(sq, grp, eps)
        if f is not None:
            pre = pre * f
    sign = None
    if not symmetrize and grp.any_flip:
        parts = []
        if node is not None:
            m, s = max_abs_sign(node)
            parts.append((bcast(m), bcast(s)))
        if edge is not None:
            parts.append(max_abs_sign(edge))
        sign = canon_sign(parts, grp)
    return g * inv_tail(mod.inv, pre, grp, sign, symmetrize)
