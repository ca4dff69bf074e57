"""The action keeps the function when the networks run as PyTorch modules too."""

from __future__ import annotations

import numpy as np
import pytest

from scalegmn.symmetry import act, sample_element
from scalegmn.weightgraph import NetworkSpec, random_network, to_torch

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("spec", [
    NetworkSpec.mlp([3, 8, 6, 2], "relu"),
    NetworkSpec.siren((2, 8, 8, 1)),
    NetworkSpec.small_cnn("tanh", channels=4, image_size=8),
    NetworkSpec.small_cnn("leaky_relu", channels=4, image_size=8),
])
def test_action_keeps_the_torch_function(spec):
    net = random_network(spec, 0)
    moved = act(sample_element(spec, 1, extreme=True), net)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(4, *spec.input_shape)))
    with torch.no_grad():
        a, b = to_torch(net)(x).numpy(), to_torch(moved)(x).numpy()
    assert np.max(np.abs(a - b)) <= 1e-9 * np.max(np.abs(a))
