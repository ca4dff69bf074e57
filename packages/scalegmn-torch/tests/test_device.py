"""Every tensor of a forward and backward pass lives on the device of the batch and the model.

The "meta" device stands in for a GPU: it has no data, so a tensor that the model creates
on the CPU without the device of its inputs meets a meta tensor and fails, as it would on
CUDA. The sparse layout indexes with boolean masks, which the meta device cannot run, so it
is checked on the dense layout here (and on a GPU by `benchmarks/gpu_check.py`).
"""

from __future__ import annotations

import pytest
import torch

from scalegmn.torch import ScaleGMN, ScaleGMNConfig, collate
from scalegmn.weightgraph import NetworkSpec, random_network

# Pairs of one shape whose hidden layers have different groups, so the model builds
# per-network group masks (the path that once took a CPU tensor): the second network's
# activation (relu6, gelu) admits permutations only, which every mode accepts.
MIXED = [("sign", ("tanh", "relu6")), ("scale", ("relu", "gelu")), ("auto", ("relu", "tanh")),
         ("permutation", ("relu", "tanh"))]


def _batch(activations: tuple[str, ...], device: str) -> object:
    nets = [random_network(NetworkSpec.mlp([3, 5, 4, 2], activation=a), k) for k, a in enumerate(activations)]
    return collate(nets, torch.float32, dense=True).to(device)


@pytest.mark.parametrize("head", ["invariant", "equivariant"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("symmetry,activations", MIXED)
def test_forward_and_backward_stay_on_the_device(symmetry: str, activations: tuple[str, ...],
                                                  bidirectional: bool, head: str) -> None:
    cfg = ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=3, symmetry=symmetry, bidirectional=bidirectional,
                         head=head, positional_encoding=True)
    model = ScaleGMN(cfg).to("meta")
    batch = _batch(activations, "meta")
    assert batch.layer_codes[1] is None  # the mixed-group path
    out = model(batch)
    y = out if head == "invariant" else out.edge_features
    assert y.device.type == "meta"
    y.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.device.type == "meta" for g in grads)


def test_a_batch_left_on_the_cpu_is_caught() -> None:
    """Negative control: the meta device does catch a CPU tensor meeting the model's."""
    model = ScaleGMN(ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=3)).to("meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        model(_batch(("relu", "tanh"), "cpu"))
