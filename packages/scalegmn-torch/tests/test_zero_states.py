"""Exactly zero node states (zero biases, dead units) must give finite gradients on every path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scalegmn.torch import ScaleGMN, ScaleGMNConfig, collate
from scalegmn.weightgraph import Network, NetworkSpec


def _zero_state_networks() -> list[Network]:
    spec = NetworkSpec.mlp([3, 4, 4, 2], activation="relu")
    rng = np.random.default_rng(0)
    nets = []
    for _ in range(3):
        ws = [rng.normal(size=(o, i)) for o, i in ((4, 3), (4, 4), (2, 4))]
        ws[0][1] = 0.0  # a unit with no inputs: its state starts at exactly zero
        ws[1][:, 2] = 0.0
        bs = [np.zeros(4), np.zeros(4), np.zeros(2)]
        nets.append(Network(spec, ws, bs))
    return nets


@pytest.mark.parametrize("layer_norm", [False, True], ids=["fused", "unfused"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradients_are_finite_at_zero_states(layer_norm: bool, bidirectional: bool) -> None:
    torch.manual_seed(0)
    model = ScaleGMN(ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=1, symmetry="scale",
                                    layer_norm=layer_norm, bidirectional=bidirectional,
                                    positional_encoding=False)).double()
    out = model(collate(_zero_state_networks(), torch.float64))
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad}"


@pytest.mark.parametrize("options", [
    {"sign_canon": "symmetrize_phi", "io_mlps": 2, "per_group_inv": True, "positional_features": True},
    {"edge_inv": "canon", "backward_edge_state": True, "bidirectional": True, "skip_linear": True},
    {"head": "equivariant", "head_in_last_layer": True, "edge_inv": "canon", "sign_canon": "canonicalize"},
])
@pytest.mark.parametrize("dense", [True, False])
def test_new_options_have_finite_gradients_at_zero_states(options: dict, dense: bool) -> None:
    torch.manual_seed(0)
    model = ScaleGMN(ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=1, symmetry="auto", **options)).double()
    out = model(collate(_zero_state_networks(), torch.float64, dense=dense))
    y = out if isinstance(out, torch.Tensor) else out.edge_features
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad}"
