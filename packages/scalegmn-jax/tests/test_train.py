"""Training utilities: the optimiser's schedule, a step that learns, dropout keys."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scalegmn.jax import (
    ScaleGMN,
    ScaleGMNConfig,
    collate,
    init_optimizer,
    make_optimizer,
    make_train_step,
    warmup_constant,
    warmup_cosine,
)
from scalegmn.weightgraph import Network, NetworkSpec, random_network


def _task(n: int = 8):
    """Tiny synthetic task: tell ReLU nets from tanh nets (same shape)."""
    nets = [random_network(NetworkSpec.mlp([2, 4, 1], "relu" if k % 2 else "tanh"), rng=k) for k in range(n)]
    labels = jnp.asarray([k % 2 for k in range(n)])
    return collate(nets), labels


def _model(**kw):
    cfg = ScaleGMNConfig(**{"d_hidden": 8, "n_layers": 2, "d_out": 2, **kw})
    return cfg, ScaleGMN(cfg, key=jax.random.key(0), dtype=jnp.float64)


def test_schedule_warms_up_linearly_then_stays():
    s = warmup_constant(1e-3, 4)
    np.testing.assert_allclose([float(s(k)) for k in range(6)], [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert float(warmup_constant(1e-3, 0)(0)) == pytest.approx(1e-3)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    s = warmup_cosine(1e-3, 4, 20)
    want = [1e-3 * min(1.0, (k + 1) / 4) if k < 4 else 1e-3 * 0.5 * (1 + np.cos(np.pi * min(k - 4, 16) / 16))
            for k in range(22)]
    np.testing.assert_allclose([float(s(k)) for k in range(22)], want, rtol=1e-6, atol=1e-12)
    assert float(s(20)) == pytest.approx(0.0, abs=1e-12) and float(s(12)) == pytest.approx(5e-4)


def test_loss_decreases():
    batch, labels = _task()
    cfg, model = _model()
    opt = make_optimizer(lr=3e-3, warmup_steps=2)
    state = init_optimizer(opt, model)
    step = make_train_step(cfg, opt)
    losses = []
    for _ in range(30):
        model, state, loss = step(model, state, batch, labels)
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0], losses


def test_loss_is_the_mean_cross_entropy_and_the_update_is_adamw():
    batch, labels = _task(4)
    cfg, model = _model()
    opt = make_optimizer(lr=1e-2, weight_decay=0.0, clip_norm=None)
    step = make_train_step(cfg, opt)
    new, _, loss = step(model, init_optimizer(opt, model), batch, labels)
    ref = optax.softmax_cross_entropy_with_integer_labels(model(batch), labels).mean()
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-12)
    # Adam's first step moves every parameter with a nonzero gradient by lr * sign(grad).
    delta = np.abs(np.asarray(new.params["node_proj.weight"] - model.params["node_proj.weight"]))
    np.testing.assert_allclose(delta[delta > 1e-6], 1e-2, rtol=1e-4)


def test_mse_and_custom_losses():
    batch, _ = _task(4)
    cfg, model = _model(d_out=1)
    target = jnp.linspace(0.0, 1.0, 4)
    opt = make_optimizer()
    _, _, loss = make_train_step(cfg, opt, loss="mse")(model, init_optimizer(opt, model), batch, target)
    np.testing.assert_allclose(float(loss), float(jnp.mean((model(batch)[:, 0] - target) ** 2)), rtol=1e-12)
    step = make_train_step(cfg, opt, loss=lambda y, t: jnp.abs(y[:, 0] - t))
    _, _, loss = step(model, init_optimizer(opt, model), batch, target)
    np.testing.assert_allclose(float(loss), float(jnp.mean(jnp.abs(model(batch)[:, 0] - target))), rtol=1e-12)


def test_dropout_uses_the_key():
    batch, labels = _task(4)
    cfg, model = _model(dropout=0.3)
    opt = make_optimizer()
    state = init_optimizer(opt, model)
    step = make_train_step(cfg, opt)
    loss = {k: float(step(model, state, batch, labels, jax.random.key(k))[2]) for k in (1, 2)}
    again = float(step(model, state, batch, labels, jax.random.key(1))[2])
    assert loss[1] != loss[2]
    assert again == loss[1]
    no_key = float(step(model, state, batch, labels)[2])
    np.testing.assert_allclose(no_key, float(optax.softmax_cross_entropy_with_integer_labels(model(batch), labels).mean()), rtol=1e-12)


def test_without_dropout_the_key_does_not_matter():
    """Control for the test above: the difference comes from dropout, not from the key alone."""
    batch, labels = _task(4)
    cfg, model = _model(dropout=0.0)
    opt = make_optimizer()
    state = init_optimizer(opt, model)
    step = make_train_step(cfg, opt)
    assert float(step(model, state, batch, labels, jax.random.key(1))[2]) == float(
        step(model, state, batch, labels, jax.random.key(2))[2])


def test_step_rejects_a_model_of_another_config():
    batch, labels = _task(2)
    cfg, model = _model()
    opt = make_optimizer()
    step = make_train_step(cfg.model_copy(update={"d_hidden": 4}), opt)
    with pytest.raises(ValueError, match="config"):
        step(model, init_optimizer(opt, model), batch, labels)


def test_zero_bias_nodes_have_finite_gradients():
    """A hidden node whose state is exactly zero (a zero bias) gets a zero, not NaN, gradient
    through its norm, as in torch (padding nodes of `shard_batch` rely on it too)."""
    net = random_network(NetworkSpec.mlp([2, 4, 1], "relu"), rng=0)
    net = Network(net.spec, net.weights)  # biases default to zeros
    batch = collate([net, random_network(NetworkSpec.mlp([2, 4, 1], "relu"), rng=1)])
    cfg, model = _model(bidirectional=True)
    opt = make_optimizer()
    new, _, loss = make_train_step(cfg, opt)(model, init_optimizer(opt, model), batch, jnp.asarray([0, 1]))
    assert np.isfinite(float(loss))
    for name, p in new.params.items():
        assert np.all(np.isfinite(np.asarray(p))), name


def test_equivariant_head_trains_with_a_per_example_loss():
    """The edited weights learn a target edit (halve every weight and bias) through the step."""
    nets = [random_network(NetworkSpec.mlp([2, 4, 1], "relu"), rng=k) for k in range(6)]
    batch = collate(nets, dtype=jnp.float64)
    target = (0.5 * batch.node_features, 0.5 * batch.edge_features)
    cfg, model = _model(head="equivariant")

    def per_example(out, labels):
        (node, edge), (tn, te) = out, labels
        return jnp.mean((node - tn) ** 2, axis=(1, 2)) + jnp.mean((edge - te) ** 2, axis=(1, 2))

    opt = make_optimizer(lr=1e-2, warmup_steps=0)
    state = init_optimizer(opt, model)
    step = make_train_step(cfg, opt, loss=per_example)
    first = float(per_example(model(batch), target).mean())
    for _ in range(25):
        model, state, loss = step(model, state, batch, target)
    assert float(loss) < 0.5 * first, (first, float(loss))
    with pytest.raises(ValueError, match="equivariant"):
        make_train_step(cfg, opt, loss="mse")
