"""The fused dense kernels equal the plain autograd computation (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_testutil import make_model, nets, rel_err, small_config, spec_for

from scalegmn.torch import collate
from scalegmn.torch import fused as fz


def _run(model, batch, fused: bool):  # type: ignore[no-untyped-def]
    model.fused = fused
    model.zero_grad(set_to_none=True)
    out = model(batch)
    y = out if isinstance(out, torch.Tensor) else torch.cat([out.node_features.flatten(1), out.edge_features.flatten(1)], 1)
    w = torch.linspace(-1, 1, y.shape[1], dtype=y.dtype)
    (y * w).sum().backward()
    return y.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@settings(max_examples=20, deadline=None)
@given(
    symmetry=st.sampled_from(["auto", "permutation"]),
    bidirectional=st.booleans(),
    message_receiver=st.booleans(),
    skip=st.booleans(),
    head=st.sampled_from(["invariant", "equivariant"]),
    act=st.sampled_from(["silu", "relu", "gelu", "tanh"]),
    kind=st.sampled_from(["mlp", "cnn", "flatten"]),
    activation=st.sampled_from(["relu", "tanh", "identity", "gelu"]),
    rows=st.sampled_from([1, 7, 2048]),
    seed=st.integers(0, 1000),
)
def test_fused_equals_unfused(symmetry: str, bidirectional: bool, message_receiver: bool, skip: bool,
                              head: str, act: str, kind: str, activation: str, rows: int, seed: int
                              ) -> None:
    old, fz.TARGET_ROWS = fz.TARGET_ROWS, rows  # chunks of one network up to the whole batch
    try:
        _check(symmetry, bidirectional, message_receiver, skip, head, act, kind, activation, seed)
    finally:
        fz.TARGET_ROWS = old


def _check(symmetry: str, bidirectional: bool, message_receiver: bool, skip: bool, head: str,
           act: str, kind: str, activation: str, seed: int) -> None:
    cfg = small_config(symmetry=symmetry, bidirectional=bidirectional, message_receiver=message_receiver,
                       skip_connections=skip, head=head, mlp_activation=act)
    model = make_model(cfg, seed=seed)
    b = collate(nets(spec_for(kind, activation), 3, seed=seed), torch.float64)
    y1, g1 = _run(model, b, True)
    y2, g2 = _run(model, b, False)
    assert g1.keys() == g2.keys()
    assert rel_err(y1, y2) < 1e-12
    for k in g2:
        assert rel_err(g1[k], g2[k]) < 1e-10, k


def test_fused_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above is not vacuous: the fused kernels run for dense batches."""
    calls = []
    orig = fz.MessageFn.apply
    monkeypatch.setattr(fz.MessageFn, "apply", lambda *a: calls.append(1) or orig(*a))
    model = make_model(small_config())
    model(collate(nets(spec_for("mlp", "relu"), 2), torch.float64))
    assert len(calls) == 2 * 3  # two layers, three weight layers


@pytest.mark.parametrize("norm,flip,cr", [(False, False, False), (True, False, True), (True, True, False),
                                          (False, True, True)])
def test_message_kernel_gradcheck(norm: bool, flip: bool, cr: bool) -> None:
    torch.manual_seed(0)
    B, n, m, d, w = 2, 3, 4, 3, 2
    dt = torch.float64

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=dt, requires_grad=True)

    e, wy = t(B, n, m, d), t(2 * d, d)
    flat = [t(B, m, d), t(B, n, d + w), t(B, n).abs().detach().requires_grad_() if norm else None, None,
            t(d + w, d), t(w), t(d, w), t(d),
            t(B, n, d), t(B, m, d + w), None, t(B, m) if cr else None, t(d + w, d), t(w), t(d, w), t(d)]
    meta = fz.MsgMeta((fz.Dir(2, 1, norm, flip, 1e-12), fz.Dir(1, 2, False, flip, 1e-12)), "silu")
    inputs = [e, wy, *flat]
    torch.autograd.gradcheck(lambda *xs: fz.MessageFn.apply(meta, *xs), inputs)


def test_edge_kernel_gradcheck() -> None:
    torch.manual_seed(0)
    B, n, m, d, w = 2, 3, 4, 3, 2

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    inputs = [t(B, n, m, d), t(B, m, w), t(B, n, w), t(d, d), t(w), t(d, w), t(d)]
    for act in ("silu", "tanh", "gelu"):
        for skip in (True, False):
            torch.autograd.gradcheck(lambda *xs, a=act, s=skip: fz.EdgeUpdateFn.apply(a, s, *xs), inputs)
