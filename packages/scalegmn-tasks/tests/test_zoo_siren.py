"""Batched SIREN fitting: the same updates as separate fits, and the stored function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scalegmn.tasks.zoo.siren import coordinate_grid, fit_sirens, siren_init
from scalegmn.weightgraph import NetworkSpec, forward

WIDTHS = (2, 16, 16, 1)


def _inits(n, widths=WIDTHS, w0=30.0, seed=0):
    inits = [siren_init(widths, w0, np.random.default_rng([seed, i])) for i in range(n)]
    ws = [np.stack([ini[0][i] for ini in inits]) for i in range(len(widths) - 1)]
    bs = [np.stack([ini[1][i] for ini in inits]) for i in range(len(widths) - 1)]
    return ws, bs


def _reference_fit(image, w, b, steps, w0, offset, lr):
    """One SIREN, fitted alone with autograd and torch.optim.Adam (an independent implementation)."""
    layers = [torch.nn.Linear(wi.shape[1], wi.shape[0]).double() for wi in w]
    with torch.no_grad():
        for lin, wi, bi in zip(layers, w, b, strict=True):
            lin.weight.copy_(torch.from_numpy(wi))
            lin.bias.copy_(torch.from_numpy(bi))
    opt = torch.optim.Adam([p for lin in layers for p in lin.parameters()], lr=lr)
    h_, w_ = image.shape
    x = coordinate_grid(h_, w_, torch.float64)
    y = torch.from_numpy(image).reshape(-1, 1)
    for _ in range(steps):
        h = x
        for k, lin in enumerate(layers):
            h = lin(h)
            if k < len(layers) - 1:
                h = torch.sin(w0 * h)
        loss = ((h + offset - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [lin.weight.detach().numpy() for lin in layers], [lin.bias.detach().numpy() for lin in layers]


@pytest.mark.parametrize("offset", [0.5, 0.0])
def test_batched_fit_equals_separate_fits(offset):
    rng = np.random.default_rng(0)
    images = rng.random((4, 6, 7))
    ws, bs = _inits(4)
    res = fit_sirens(images, ws, bs, steps=15, w0=30.0, output_offset=offset, lr=1e-3, dtype=torch.float64)
    for k in range(4):
        rw, rb = _reference_fit(images[k], [w[k] for w in ws], [b[k] for b in bs], 15, 30.0, offset, 1e-3)
        for i in range(3):
            np.testing.assert_allclose(res.weights[i][k], rw[i], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(res.biases[i][k], rb[i], rtol=1e-10, atol=1e-12)
        assert not np.allclose(res.weights[1][k], ws[1][k])  # it did move


def test_batch_composition_does_not_change_a_fit():
    images = np.random.default_rng(1).random((3, 5, 5))
    ws, bs = _inits(3)
    together = fit_sirens(images, ws, bs, steps=10, dtype=torch.float64)
    alone = fit_sirens(images[1:2], [w[1:2] for w in ws], [b[1:2] for b in bs], steps=10, dtype=torch.float64)
    for i in range(3):
        np.testing.assert_allclose(together.weights[i][1], alone.weights[i][0], rtol=1e-12, atol=1e-14)


def test_negative_control_tolerance_detects_a_tiny_change():
    """The comparison above is tight: a learning rate off by one part in a million is caught."""
    images = np.random.default_rng(2).random((1, 6, 7))
    ws, bs = _inits(1)
    res = fit_sirens(images, ws, bs, steps=15, dtype=torch.float64)
    rw, _ = _reference_fit(images[0], [w[0] for w in ws], [b[0] for b in bs], 15, 30.0, 0.5, 1e-3 * (1 + 1e-6))
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(res.weights[1][0], rw[1], rtol=1e-10, atol=1e-12)


def test_fitted_network_renders_the_image_with_recorded_mse():
    img = np.zeros((10, 10))
    img[2:8, 4:6] = 1.0
    ws, bs = _inits(1, (2, 32, 32, 1))
    res = fit_sirens(img[None], ws, bs, steps=300, dtype=torch.float64)
    spec = NetworkSpec.siren((2, 32, 32, 1), w0=30.0, output_offset=0.5)
    (net,) = res.networks(spec)
    out = forward(net, coordinate_grid(10, 10, torch.float64).numpy())[:, 0].reshape(10, 10)
    np.testing.assert_allclose(np.mean((out - img) ** 2), res.mse[0], rtol=1e-8)
    assert res.psnr[0] > 30.0
    # Negative control: the same network without the 0.5 offset renders a shifted image.
    wrong = NetworkSpec.siren((2, 32, 32, 1), w0=30.0, output_offset=0.0)
    (net0,) = res.networks(wrong)
    out0 = forward(net0, coordinate_grid(10, 10, torch.float64).numpy())[:, 0].reshape(10, 10)
    assert np.mean((out0 - img) ** 2) > 0.2


def test_pixel_coordinates_are_row_major():
    g = coordinate_grid(2, 3).numpy()
    np.testing.assert_allclose(g, [[-1, -1], [-1, 0], [-1, 1], [1, -1], [1, 0], [1, 1]])


def test_shape_mismatch_is_refused():
    ws, bs = _inits(2)
    with pytest.raises(ValueError, match="3 channel"):
        fit_sirens(np.zeros((2, 4, 4, 3)), ws, bs, steps=1)
