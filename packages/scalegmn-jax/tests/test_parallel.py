"""Data-parallel training: two (forced host) devices follow the one-device trajectory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalegmn.jax import collate, make_mesh, shard_batch
from scalegmn.weightgraph import NetworkSpec, random_network

SCRIPT = textwrap.dedent('''
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from scalegmn.jax import (ScaleGMN, ScaleGMNConfig, collate, init_optimizer, make_mesh,
                              make_optimizer, make_train_step, replicate, shard_batch, train)
    from scalegmn.weightgraph import NetworkSpec, random_network

    assert len(jax.devices()) == 2, jax.devices()
    specs = [NetworkSpec.mlp([2, 5, 4, 2], "relu"), NetworkSpec.mlp([2, 3, 2], "tanh"),
             NetworkSpec.siren((2, 4, 1))]
    nets = [random_network(specs[k % 3], rng=k) for k in range(5)]   # 3 + 2 over two devices
    labels = np.array([0, 1, 2, 1, 0])
    cfg = ScaleGMNConfig(d_hidden=8, n_layers=2, d_out=3, bidirectional=True)
    opt = make_optimizer(lr=1e-2, warmup_steps=2)

    def run(batch, labels, mesh=None):
        model = ScaleGMN(cfg, key=jax.random.key(0), dtype=jnp.float64)
        state = init_optimizer(opt, model)
        if mesh is not None:
            model, state = replicate(model, mesh), replicate(state, mesh)
        step = make_train_step(cfg, opt)
        losses = []
        for _ in range(5):
            model, state, loss = step(model, state, batch, labels)
            losses.append(float(loss))
        return losses, model

    one, m1 = run(collate(nets), jnp.asarray(labels))
    mesh = make_mesh()
    sb, sl = shard_batch(nets, labels, mesh)
    two, m2 = run(sb, sl, mesh)
    diff = max(float(jnp.max(jnp.abs(m1.params[k] - m2.params[k]))) for k in m1.params)
    devices = {k: len(a.sharding.device_set) for k, a in
               [("nodes", sb.graphs.node_features), ("labels", sl), ("params", m2.params["node_proj.weight"])]}
    # One architecture: dense sub-batches (3 + 2 networks, one masked copy on device 2).
    same = [random_network(specs[0], rng=10 + k) for k in range(5)]
    one_dense, _ = run(collate(same), jnp.asarray(labels))
    sd, sdl = shard_batch(same, labels, mesh)
    two_dense, _ = run(sd, sdl, mesh)
    layouts = [type(sb.graphs).__name__, type(sd.graphs).__name__]
    # Negative control: average the per-device means (wrong when devices hold unequal counts).
    train._reduce = lambda sums, mask: (jnp.mean(sums / mask.sum(1)), jnp.asarray(1.0, sums.dtype))
    control, _ = run(sb, sl, mesh)
    print(json.dumps({"one": one, "two": two, "control": control, "param_diff": diff,
                      "devices": devices, "one_dense": one_dense, "two_dense": two_dense,
                      "layouts": layouts}))
''')


@pytest.fixture(scope="module")
def trajectories():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_devices_follow_the_one_device_trajectory(trajectories):
    t = trajectories
    assert t["devices"] == {"nodes": 2, "labels": 2, "params": 2}
    assert len(set(t["one"])) == 5, "the loss should change every step"
    np.testing.assert_allclose(t["two"], t["one"], rtol=1e-10)
    assert t["param_diff"] < 1e-10


def test_dense_sub_batches_follow_the_one_device_trajectory(trajectories):
    """Networks of one shape are sharded as dense sub-batches (the fast path), same trajectory."""
    t = trajectories
    assert t["layouts"] == ["GraphBatch", "DenseGraphBatch"]
    assert len(set(t["one_dense"])) == 5
    np.testing.assert_allclose(t["two_dense"], t["one_dense"], rtol=1e-10)


def test_mean_of_device_means_is_a_different_trajectory(trajectories):
    """Negative control: without the global normalisation the trajectory differs."""
    t = trajectories
    assert not np.allclose(t["control"], t["one"], rtol=1e-6)


def test_sharded_batch_layout():
    nets = [random_network(NetworkSpec.mlp([2, 3, 1]), rng=k) for k in range(3)]
    nets.append(random_network(NetworkSpec.small_cnn("relu", channels=2, image_size=6, n_classes=2), rng=3))
    sb, lab = shard_batch(nets, np.arange(4), make_mesh(jax.devices()[:1]))
    g = sb.graphs
    assert g.n_graphs == 4 and sb.n_networks == 4
    assert g.node_features.shape[:2] == (1, collate(nets).node_features.shape[0] + 1)
    assert g.edge_features.shape[2] == collate(nets).edge_features.shape[1]
    assert lab.shape == (1, 4)
    with pytest.raises(ValueError, match="labels"):
        shard_batch(nets, np.arange(3), make_mesh(jax.devices()[:1]))


def test_padding_does_not_change_the_outputs():
    """The padded sub-batch gives the outputs of the unpadded one (padding belongs to no graph)."""
    from scalegmn.jax import ScaleGMN, ScaleGMNConfig, forward

    nets = [random_network(NetworkSpec.mlp([2, 5, 2], "relu"), rng=k) for k in range(3)]
    sb, _ = shard_batch(nets, np.zeros(3), make_mesh(jax.devices()[:1]), dense=False)
    for cfg in (ScaleGMNConfig(d_hidden=6, n_layers=2, d_out=3, bidirectional=True),
                ScaleGMNConfig(d_hidden=6, n_layers=1, d_out=3, readout="last_layer")):
        model = ScaleGMN(cfg, key=jax.random.key(0), dtype=jnp.float64)
        one = jax.tree_util.tree_map(lambda a: a[0], sb.graphs)
        np.testing.assert_allclose(np.asarray(forward(model.params, cfg, one)),
                                   np.asarray(model(collate(nets))), rtol=1e-12, atol=1e-12)
