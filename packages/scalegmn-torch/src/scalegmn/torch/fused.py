"""Fused per-edge kernels for the dense layout (the fast path of `GMNLayer`).

Everything that lives on edges (`[B, n_l, n_{l-1}, d]` tensors) is computed here in chunks
of a few networks, inside reusable per-thread work buffers: the chunk's temporaries stay
in cache, no large tensor is allocated per operation (with the default allocator each
fresh large tensor costs page faults), and nothing per edge is stored for the backward
pass (it is recomputed chunk by chunk; the recomputation costs a third more multiply-adds
and saves the memory traffic of storing and re-reading several edge-sized tensors).
The math is exactly that of `layer.py` (tests compare values and gradients).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

from einops import rearrange

import torch
from torch import Tensor

TARGET_ROWS = 2048
"""Edges per chunk (rows of the per-chunk matrices); tuned on a 2-core machine."""


class _Work(threading.local):
    def __init__(self) -> None:
        self.bufs: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        n = 1
        for s in shape:
            n *= s
        key = (name, like.dtype, like.device)
        buf = self.bufs.get(key)
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=like.dtype, device=like.device)
            self.bufs[key] = buf
        return buf[:n].view(shape)


_WS = _Work()


def clear_work_buffers() -> None:
    """Free the per-thread work buffers of the fused kernels."""
    _WS.bufs.clear()


def _act_(name: str, x: Tensor) -> Tensor:
    if name == "silu":
        return torch.ops.aten.silu_(x)
    if name == "relu":
        return x.relu_()
    if name == "gelu":
        return torch.ops.aten.gelu_(x)
    return x.tanh_()


def _act_bwd(name: str, grad: Tensor, x: Tensor, out: Tensor) -> Tensor:
    """`grad * act'(x)` into `out` (`out` may not alias `grad` or `x`)."""
    if name == "silu":
        return torch.ops.aten.silu_backward.grad_input(grad, x, grad_input=out)
    if name == "relu":
        return torch.ops.aten.threshold_backward.grad_input(grad, x, 0, grad_input=out)
    if name == "gelu":
        return torch.ops.aten.gelu_backward.grad_input(grad, x, approximate="none", grad_input=out)
    torch.tanh(x, out=out)
    return out.square_().neg_().add_(1).mul_(grad)


def _chunk(B: int, rows_per_net: int) -> int:
    return max(1, min(B, TARGET_ROWS // max(rows_per_net, 1)))


@dataclass(frozen=True)
class Dir:
    """One message direction on a `[c, n, m, d]` chunk (n targets, m sources).

    Attributes:
        snd, rcv: the sender and receiver axes (2, 1 forward; 1, 2 backward).
        norm, flip: the receivers' group normalises / is sign-symmetrised.
        eps: `norm_eps`.
    """

    snd: int
    rcv: int
    norm: bool
    flip: bool
    eps: float


@dataclass(frozen=True)
class MsgMeta:
    """Static data of a `MessageFn` call."""

    dirs: tuple[Dir, ...]
    act: str


_N_DIR = 8  # per direction: S, Rn, sqr, cr, Wr, b1, W2, b2

_DirArgs = tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor, Tensor, Tensor, Tensor]


def _dir_args(flat: Sequence[Tensor | None], k: int) -> _DirArgs:
    """The `_N_DIR` inputs of direction `k` (or their gradients); only Rn, sqr, cr may be None."""
    S, Rn, sqr, cr, Wr, b1, W2, b2 = flat[k * _N_DIR : (k + 1) * _N_DIR]
    assert S is not None and Wr is not None and b1 is not None and W2 is not None
    assert b2 is not None
    return S, Rn, sqr, cr, Wr, b1, W2, b2


class MessageFn(torch.autograd.Function):
    """Aggregated messages of one weight layer in one or two directions.

    Inputs: `e [B, n, m, d]`, `Wy [k d, d]` (the `b` maps of the directions' ReScaleEq,
    stacked), and per direction `S` (sender factor `[B, n_s, d]`), `Rn` (receiver part of
    the first Linears `[B, n_r, d + w]` or None), `sqr` (receiver squared norm `[B, n_r]` or
    None), `cr` (receiver factor `[B, n_r]` or None), `Wr [d + w, d]`, `b1 [w]`, `W2 [d, w]`,
    `b2 [d]`. Output per direction: `[B, n_r, d]`.
    """

    @staticmethod
    def forward(ctx: Any, meta: MsgMeta, e: Tensor, wy: Tensor, *flat: Tensor | None) -> Any:  # type: ignore[override]
        B, n, m, d = e.shape
        c = _chunk(B, n * m)
        outs = []
        for dr in meta.dirs:
            n_r = n if dr.rcv == 1 else m
            outs.append(e.new_empty(B, n_r, d))
        for b0 in range(0, B, c):
            b1_ = min(B, b0 + c)
            cc = b1_ - b0
            y = _WS.get("Y", (cc * n * m, wy.shape[0]), e)
            torch.mm(rearrange(e[b0:b1_], "c t s d -> (c t s) d"), wy.t(), out=y)
            for k, dr in enumerate(meta.dirs):
                S, Rn, sqr, cr, Wr, bb1, W2, b2 = _dir_args(flat, k)
                yd = rearrange(y[:, k * d : (k + 1) * d], "(c t s) d -> c t s d", t=n, s=m)
                st = _dir_forward(dr, meta.act, yd, _sl(S, b0, b1_), _sl(Rn, b0, b1_),
                                  _sl(sqr, b0, b1_), _sl(cr, b0, b1_), Wr, bb1, W2, b2)
                v, g = st["V"], st["g"]
                v.mul_(g)
                torch.sum(v, dr.snd, out=outs[k][b0:b1_])
        ctx.meta = meta
        ctx.save_for_backward(e, wy, *flat)
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> Any:
        meta: MsgMeta = ctx.meta
        e, wy, *flat = ctx.saved_tensors
        B, n, m, d = e.shape
        c = _chunk(B, n * m)
        need_e = ctx.needs_input_grad[1]
        de = torch.empty_like(e) if need_e else None
        dwy = torch.zeros_like(wy)
        dflat: list[Tensor | None] = [None if t is None else torch.zeros_like(t) for t in flat]
        for b0 in range(0, B, c):
            b1_ = min(B, b0 + c)
            cc = b1_ - b0
            ec = rearrange(e[b0:b1_], "c t s d -> (c t s) d")
            y = _WS.get("Y", (cc * n * m, wy.shape[0]), e)
            torch.mm(ec, wy.t(), out=y)
            dy = _WS.get("DY", (cc * n * m, wy.shape[0]), e)
            for k, dr in enumerate(meta.dirs):
                S, Rn, sqr, cr, Wr, bb1, W2, b2 = _dir_args(flat, k)
                gS, gRn, gsqr, gcr, gWr, gb1, gW2, gb2 = _dir_args(dflat, k)
                yd = rearrange(y[:, k * d : (k + 1) * d], "(c t s) d -> c t s d", t=n, s=m)
                # `view`, not `rearrange`: the gradient is written through it, and a reshape
                # that had to copy would drop those writes silently.
                dyd = dy[:, k * d : (k + 1) * d].view(cc, n, m, d)
                g_out = grads[k]
                if g_out is None:
                    dyd.zero_()
                    continue
                _dir_backward(
                    dr, meta.act, yd, dyd, g_out[b0:b1_],
                    _sl(S, b0, b1_), _sl(Rn, b0, b1_), _sl(sqr, b0, b1_), _sl(cr, b0, b1_),
                    Wr, bb1, W2, b2,
                    _sl(gS, b0, b1_), _sl(gRn, b0, b1_), _sl(gsqr, b0, b1_), _sl(gcr, b0, b1_),
                    gWr, gb1, gW2, gb2,
                )
            dwy.addmm_(dy.t(), ec)
            if de is not None:
                torch.mm(dy, wy, out=de[b0:b1_].view(-1, d))
        return (None, de, dwy, *dflat)


@overload
def _sl(t: Tensor, b0: int, b1: int) -> Tensor: ...
@overload
def _sl(t: Tensor | None, b0: int, b1: int) -> Tensor | None: ...
def _sl(t: Tensor | None, b0: int, b1: int) -> Tensor | None:
    return None if t is None else t[b0:b1]


def _dir_forward(dr: Dir, act: str, yd: Tensor, S: Tensor, Rn: Tensor | None, sqr: Tensor | None,
                 cr: Tensor | None, Wr: Tensor, b1: Tensor, W2: Tensor, b2: Tensor) -> dict[str, Any]:
    cc, n, m, d = yd.shape
    w = b1.shape[0]
    R = _WS.get("R", (cc, n, m, d), yd)
    torch.mul(yd, S.unsqueeze(dr.rcv), out=R)
    if cr is not None:
        R.mul_(cr.unsqueeze(dr.snd).unsqueeze(-1))
    GP = _WS.get("GP", (cc, n, m, d + w), yd)
    torch.mm(R.view(-1, d), Wr.t(), out=GP.view(-1, d + w))
    if Rn is not None:
        GP.add_(Rn.unsqueeze(dr.snd))
    pre = GP[..., d:]
    f = None
    if dr.norm:
        s = torch.linalg.vector_norm(R, dim=-1, keepdim=True)
        if sqr is not None:
            s = s.square_().add_(sqr.unsqueeze(dr.snd).unsqueeze(-1)).sqrt_()
        f = s.clamp_min(dr.eps).reciprocal_()
        pre.mul_(f)
    HA = _WS.get("HA", (cc, n, m, w), yd)
    torch.add(pre, b1, out=HA)
    _act_(act, HA)
    if dr.flip:
        HB = _WS.get("HB", (cc, n, m, w), yd)
        torch.sub(b1, pre, out=HB)
        _act_(act, HB)
        HA.add_(HB)
    V = _WS.get("V", (cc, n, m, d), yd)
    torch.addmm(b2 * 2 if dr.flip else b2, HA.view(-1, w), W2.t(), out=V.view(-1, d))
    return {"R": R, "GP": GP, "g": GP[..., :d], "pre": pre, "f": f, "s": s if dr.norm else None,
            "HA": HA, "V": V}


def _dir_backward(dr: Dir, act: str, yd: Tensor, dyd: Tensor, dagg: Tensor, S: Tensor,
                  Rn: Tensor | None, sqr: Tensor | None, cr: Tensor | None, Wr: Tensor,
                  b1: Tensor, W2: Tensor, b2: Tensor, gS: Tensor, gRn: Tensor | None,
                  gsqr: Tensor | None, gcr: Tensor | None, gWr: Tensor, gb1: Tensor,
                  gW2: Tensor, gb2: Tensor) -> None:
    st = _dir_forward(dr, act, yd, S, Rn, sqr, cr, Wr, b1, W2, b2)
    R, g, pre, f, V, HA = st["R"], st["g"], st["pre"], st["f"], st["V"], st["HA"]
    cc, n, m, d = yd.shape
    w = b1.shape[0]
    dm = dagg.unsqueeze(dr.snd)
    DGP = _WS.get("DGP", (cc, n, m, d + w), yd)
    torch.mul(V, dm, out=DGP[..., :d])
    DV = _WS.get("DV", (cc, n, m, d), yd)
    torch.mul(g, dm, out=DV)
    gW2.addmm_(DV.view(-1, d).t(), HA.view(-1, w))
    db2 = DV.view(-1, d).sum(0)
    gb2.add_(db2 * 2 if dr.flip else db2)
    DHA = _WS.get("DHA", (cc, n, m, w), yd)
    torch.mm(DV.view(-1, d), W2, out=DHA.view(-1, w))
    PA = _WS.get("PA", (cc, n, m, w), yd)
    torch.add(pre, b1, out=PA)
    DPRE = DGP[..., d:]
    _act_bwd(act, DHA, PA, DPRE)
    if dr.flip:
        torch.sub(b1, pre, out=PA)
        DPB = _WS.get("DPB", (cc, n, m, w), yd)
        _act_bwd(act, DHA, PA, DPB)
        gb1.add_(DPRE.sum((0, 1, 2))).add_(DPB.sum((0, 1, 2)))
        DPRE.sub_(DPB)
    else:
        gb1.add_(DPRE.sum((0, 1, 2)))
    dsq = None
    if dr.norm:
        assert f is not None
        s = st["s"]
        # pre holds the normalised pre-activation; d/d(sq) of 1/max(sqrt(sq), eps).
        T = _WS.get("T", (cc, n, m, w), yd)
        dsq = torch.mul(DPRE, pre, out=T).sum(-1, keepdim=True)
        dsq.mul_(f.square()).mul_(-0.5).masked_fill_(s <= dr.eps, 0.0)
        DPRE.mul_(f)
        if gsqr is not None:
            gsqr.add_(dsq.squeeze(-1).sum(dr.snd))
    if gRn is not None:
        gRn.add_(DGP.sum(dr.snd))
    gWr.addmm_(DGP.view(-1, d + w).t(), R.view(-1, d))
    DR = _WS.get("DR", (cc, n, m, d), yd)
    torch.mm(DGP.view(-1, d + w), Wr, out=DR.view(-1, d))
    if dsq is not None:
        DR.addcmul_(R, dsq, value=2.0)
    sx = S.unsqueeze(dr.rcv)
    torch.mul(DR, sx, out=dyd)
    if cr is not None:
        assert gcr is not None
        crx = cr.unsqueeze(dr.snd).unsqueeze(-1)
        T = _WS.get("T", (cc, n, m, d), yd)
        torch.mul(dyd, yd, out=T)
        gcr.add_(T.sum(-1).sum(dr.snd))
        dyd.mul_(crx)
        DR.mul_(yd).mul_(crx)
    else:
        DR.mul_(yd)
    gS.add_(DR.sum(dr.rcv))


class EdgeUpdateFn(torch.autograd.Function):
    """`e' = (e Wg^T) * (act(P_j + Q_i + b1) W2^T + b2) [+ e]` on `[B, n, m, d]` edges.

    Inputs: `e [B, n, m, d]`, `P [B, m, w]` (sources), `Q [B, n, w]` (targets),
    `Wg [d, d]`, `b1 [w]`, `W2 [d, w]`, `b2 [d]`.
    """

    @staticmethod
    def forward(ctx: Any, act: str, skip: bool, e: Tensor, P: Tensor, Q: Tensor, Wg: Tensor,  # type: ignore[override]
                b1: Tensor, W2: Tensor, b2: Tensor) -> Tensor:
        B, n, m, _ = e.shape
        c = _chunk(B, n * m)
        out = torch.empty_like(e)
        for b0 in range(0, B, c):
            b1_ = min(B, b0 + c)
            st = _edge_forward(act, e[b0:b1_], P[b0:b1_], Q[b0:b1_], Wg, b1, W2, b2)
            o = out[b0:b1_]
            torch.mul(st["GA"], st["V"], out=o)
            if skip:
                o.add_(e[b0:b1_])
        ctx.act, ctx.skip = act, skip
        ctx.save_for_backward(e, P, Q, Wg, b1, W2, b2)
        return out

    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> Any:
        e, P, Q, Wg, b1, W2, b2 = ctx.saved_tensors
        B, n, m, d = e.shape
        w = b1.shape[0]
        c = _chunk(B, n * m)
        de = torch.empty_like(e) if ctx.needs_input_grad[2] else None
        dP, dQ = torch.zeros_like(P), torch.zeros_like(Q)
        dWg, db1, dW2, db2 = (torch.zeros_like(t) for t in (Wg, b1, W2, b2))
        dout = dout.contiguous()
        for b0 in range(0, B, c):
            b1_ = min(B, b0 + c)
            cc = b1_ - b0
            ec = e[b0:b1_]
            st = _edge_forward(ctx.act, ec, P[b0:b1_], Q[b0:b1_], Wg, b1, W2, b2, keep_pre=True)
            GA, V, HA, PA = st["GA"], st["V"], st["HA"], st["PA"]
            do = dout[b0:b1_]
            DGA = _WS.get("DGA", (cc, n, m, d), e)
            torch.mul(do, V, out=DGA)
            DV = _WS.get("DV", (cc, n, m, d), e)
            torch.mul(do, GA, out=DV)
            dW2.addmm_(DV.view(-1, d).t(), HA.view(-1, w))
            db2.add_(DV.view(-1, d).sum(0))
            DHA = _WS.get("DHA", (cc, n, m, w), e)
            torch.mm(DV.view(-1, d), W2, out=DHA.view(-1, w))
            DPA = _WS.get("DPA", (cc, n, m, w), e)
            _act_bwd(ctx.act, DHA, PA, DPA)
            dP[b0:b1_] += DPA.sum(1)
            dQ[b0:b1_] += DPA.sum(2)
            db1.add_(DPA.sum((0, 1, 2)))
            dWg.addmm_(DGA.view(-1, d).t(), ec.reshape(-1, d))
            if de is not None:
                dst = de[b0:b1_]
                torch.mm(DGA.view(-1, d), Wg, out=dst.view(-1, d))
                if ctx.skip:
                    dst.add_(do)
        return None, None, de, dP, dQ, dWg, db1, dW2, db2


def _edge_forward(act: str, e: Tensor, P: Tensor, Q: Tensor, Wg: Tensor, b1: Tensor, W2: Tensor,
                  b2: Tensor, keep_pre: bool = False) -> dict[str, Tensor]:
    cc, n, m, d = e.shape
    w = b1.shape[0]
    GA = _WS.get("GA", (cc, n, m, d), e)
    torch.mm(rearrange(e, "c t s d -> (c t s) d"), Wg.t(), out=GA.view(-1, d))
    PA = _WS.get("PA", (cc, n, m, w), e)
    torch.add(rearrange(P, "c s w -> c 1 s w"), rearrange(Q, "c t w -> c t 1 w"), out=PA)
    PA.add_(b1)
    if keep_pre:
        HA = _WS.get("HA", (cc, n, m, w), e)
        HA.copy_(PA)
    else:
        HA = PA
    _act_(act, HA)
    V = _WS.get("V", (cc, n, m, d), e)
    torch.addmm(b2, HA.view(-1, w), W2.t(), out=V.view(-1, d))
    return {"GA": GA, "V": V, "HA": HA, "PA": PA}
