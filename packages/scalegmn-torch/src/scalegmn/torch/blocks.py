"""The building blocks: MLP, ScaleInv, ScaleEq, ReScaleEq (`docs/model.md`).

The modules hold parameters under the checkpoint names; the computation is in functions
that take the first Linear of an invariant MLP apart, so that work on a concatenation
`[h_i, r_ji]` is done once per node for the `h_i` part and once per edge for the `r_ji`
part (the result is the same map, with fewer multiplications).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
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

    def tail(self, pre: Tensor, start: int = 0) -> Tensor:
        """The MLP from the output of Linear `start` without its bias: `[..., d_out]`."""
        x = pre + self.linear(start).bias
        for k in range(start, self.n_hidden):
            x = self.hidden(k, x)
            x = self.linear(k + 1)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP: `[..., d_in] -> [..., d_out]`."""
        return self.tail(F.linear(x, self.linear(0).weight))


class ScaleEq(nn.Module):
    """Parameters of `ScaleEq_G(x) = (gamma x) * ScaleInv_G(x)` for an input of width `d_in`."""

    def __init__(self, d_in: int, d: int, mlp_hidden: int, n_hidden: int, activation: str,
                 layer_norm: bool, dropout: float) -> None:
        super().__init__()
        self.gamma = nn.Linear(d_in, d, bias=False)
        self.inv = MLP(d_in, mlp_hidden, d, n_hidden, activation, layer_norm, dropout)


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
    symmetrize: bool,
) -> Tensor:
    """`ScaleEq_G([bcast(node), edge])` without materialising the concatenation.

    The `node` part (`[..., n_node]` per node) goes through the first Linears once per node
    and is broadcast onto the rows by `bcast`; the `edge` part (`[..., n_edge]` per row) once
    per row. Either part may be `None`.

    Returns:
        `[..., d]` per row.
    """
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
    g, pre = gp[..., :d], gp[..., d:]
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
