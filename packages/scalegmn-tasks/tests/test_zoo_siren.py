"""Batched SIREN fitting: the same updates as separate fits, and the stored function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scalegmn.tasks.zoo.siren import coordinate_grid, dws_init, fit_sirens, siren_init
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


def test_the_compiled_fit_equals_separate_fits():
    """`compile=True` (narrow layers as fused broadcast sums, refilled slots) makes the same updates."""
    rng = np.random.default_rng(3)
    images = rng.random((3, 6, 7))
    ws, bs = _inits(3)
    res = fit_sirens(images, ws, bs, steps=8, lr=1e-3, dtype=torch.float64, compile=True, batch_size=2)
    for k in range(3):
        rw, rb = _reference_fit(images[k], [w[k] for w in ws], [b[k] for b in bs], 8, 30.0, 0.5, 1e-3)
        for i in range(3):
            np.testing.assert_allclose(res.weights[i][k], rw[i], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(res.biases[i][k], rb[i], rtol=1e-10, atol=1e-12)


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
    with pytest.raises(ValueError, match="at least one image"):
        fit_sirens(np.zeros((0, 4, 4)), [w[:0] for w in ws], [b[:0] for b in bs], steps=1)


def _stack(inits):
    n_layers = len(inits[0][0])
    return ([np.stack([ini[0][i] for ini in inits]) for i in range(n_layers)],
            [np.stack([ini[1][i] for ini in inits]) for i in range(n_layers)])


def _dws_stats(init_fn, n=400, widths=(2, 32, 32, 1), w0=30.0):
    ws, bs = _stack([init_fn(widths, w0, np.random.default_rng([7, i])) for i in range(n)])
    return ws, bs


def test_dws_init_bounds_zero_biases_and_torch_default_last_layer():
    from scipy import stats

    ws, bs = _dws_stats(dws_init)
    for layer, n_in in ((0, 2), (1, 32)):
        bound = np.sqrt(6.0 / n_in) / 30.0
        assert np.abs(ws[layer]).max() <= bound
        assert np.abs(ws[layer]).max() > 0.99 * bound  # uniform up to the bound, not narrower
        np.testing.assert_allclose(np.var(ws[layer]), bound**2 / 3, rtol=0.05)
        assert np.all(bs[layer] == 0.0)
    # Last layer: the same distribution as a freshly made nn.Linear(32, 1) (kaiming-uniform, a=sqrt(5)).
    torch.manual_seed(0)
    ref_w = np.concatenate([torch.nn.Linear(32, 1).weight.detach().numpy().ravel() for _ in range(400)])
    ref_b = np.concatenate([torch.nn.Linear(32, 1).bias.detach().numpy().ravel() for _ in range(2000)])
    assert stats.ks_2samp(ws[2].ravel(), ref_w).pvalue > 1e-3
    assert stats.ks_2samp(bs[2].ravel(), ref_b).pvalue > 1e-3
    # Negative controls: the SIREN recipe's first layer and biases fail these checks.
    sw, sb = _dws_stats(siren_init)
    assert np.abs(sw[0]).max() > np.sqrt(6.0 / 2) / 30.0
    assert not np.all(sb[0] == 0.0)
    assert stats.ks_2samp(ws[1].ravel(), ref_w).pvalue < 1e-3  # the KS check can fail


def _easy_and_hard(n_easy, n_hard, size=8, seed=0):
    rng = np.random.default_rng(seed)
    easy = np.full((n_easy, size, size), 0.5) + 0.01 * rng.standard_normal((n_easy, 1, 1))
    hard = rng.random((n_hard, size, size))
    return np.concatenate([easy, hard])


def test_early_stop_keeps_the_parameters_of_the_first_step_over_the_threshold():
    img = _easy_and_hard(1, 0)
    ws, bs = _stack([dws_init((2, 16, 16, 1), 30.0, np.random.default_rng(3))])
    res = fit_sirens(img, ws, bs, steps=400, lr=5e-4, psnr_stop=40.0, dtype=torch.float64)
    k = int(res.steps[0])
    assert res.stopped[0] and 0 < k < 400 and res.psnr[0] >= 40.0
    exact = fit_sirens(img, ws, bs, steps=k, lr=5e-4, dtype=torch.float64)
    before = fit_sirens(img, ws, bs, steps=k - 1, lr=5e-4, dtype=torch.float64)
    after = fit_sirens(img, ws, bs, steps=k + 1, lr=5e-4, dtype=torch.float64)
    assert before.psnr[0] < 40.0 and not before.stopped[0] and before.steps[0] == k - 1
    for i in range(3):
        np.testing.assert_allclose(res.weights[i], exact.weights[i], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(res.biases[i], exact.biases[i], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.mse, exact.mse, rtol=1e-10)
    # Negative control: one step later the parameters differ.
    assert not np.allclose(after.weights[1], res.weights[1], rtol=1e-12, atol=1e-14)


def test_refilled_slots_give_each_network_its_own_fit():
    """Finished networks leave their slot to pending ones; every fit equals fitting it alone."""
    images = _easy_and_hard(3, 3, size=6)[[0, 3, 1, 4, 5, 2]]
    ws, bs = _stack([dws_init((2, 16, 16, 1), 30.0, np.random.default_rng([1, i])) for i in range(6)])
    res = fit_sirens(images, ws, bs, steps=60, lr=5e-4, psnr_stop=40.0, batch_size=2, dtype=torch.float64)
    assert res.stopped.any() and not res.stopped.all()  # slots were refilled at different times
    for k in range(6):
        one = fit_sirens(images[k : k + 1], [w[k : k + 1] for w in ws], [b[k : k + 1] for b in bs],
                         steps=60, lr=5e-4, psnr_stop=40.0, dtype=torch.float64)
        assert res.steps[k] == one.steps[0] and res.stopped[k] == one.stopped[0]
        for i in range(3):
            np.testing.assert_allclose(res.weights[i][k], one.weights[i][0], rtol=1e-12, atol=1e-14)
    # Negative control: a different step count is told apart.
    other = fit_sirens(images[4:5], [w[4:5] for w in ws], [b[4:5] for b in bs], steps=59, lr=5e-4,
                       dtype=torch.float64)
    assert not np.allclose(other.weights[1][0], res.weights[1][4], rtol=1e-12, atol=1e-14)
