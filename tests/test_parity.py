"""torch <-> jax parity: same parameter names, same outputs, same gradients, portable checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
sgt = pytest.importorskip("scalegmn.torch")
sgj = pytest.importorskip("scalegmn.jax")

import jax.numpy as jnp  # noqa: E402

# the option strategy of the torch tests (one definition of what a valid draw is)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "scalegmn-torch" / "tests"))
from torch_testutil import option_config, options  # noqa: E402

from scalegmn.weightgraph import NetworkSpec, ScaleGMNConfig, random_network  # noqa: E402

pytestmark = pytest.mark.parity
jax.config.update("jax_enable_x64", True)

ACT = {"scale": "relu", "sign": "tanh", "nonzero": "identity", "auto": "relu", "permutation": "gelu", "hetero": "tanh"}

configs = st.fixed_dictionaries({
    "symmetry": st.sampled_from(["auto", "permutation", "scale", "sign", "nonzero"]),
    "bidirectional": st.booleans(),
    "message_receiver": st.booleans(),
    "edge_update": st.booleans(),
    "skip_connections": st.booleans(),
    "sign_canon": st.sampled_from(["symmetrize", "canonicalize"]),
    "mlp_layers": st.integers(0, 2),
    "layer_norm": st.booleans(),
    "mlp_activation": st.sampled_from(["silu", "relu", "gelu", "tanh"]),
    "positional_encoding": st.booleans(),
    "readout": st.sampled_from(["full_graph", "last_layer"]),
    "head": st.sampled_from(["invariant", "equivariant"]),
})


def _networks(kind: str, symmetry: str, seed: int):
    act = ACT[symmetry]
    if kind == "mlp":
        spec = NetworkSpec.mlp([2, 5, 4, 2], act)
    else:
        spec = NetworkSpec.small_cnn(act, channels=3, image_size=6, n_classes=2)
    return [random_network(spec, seed + k) for k in range(2)]


def _pair(cfg: ScaleGMNConfig, seed: int):
    torch.manual_seed(seed)
    tm = sgt.ScaleGMN(cfg).double()
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in tm.state_dict().items()}
    return tm, sgj.ScaleGMN(cfg, params=params)


def _flat(x) -> np.ndarray:
    return np.asarray(x.detach().numpy() if hasattr(x, "detach") else x)


@settings(max_examples=15, deadline=None)
@given(kw=configs, kind=st.sampled_from(["mlp", "cnn"]), seed=st.integers(0, 1000))
def test_same_names_and_outputs(kw, kind, seed):
    _check_same(ScaleGMNConfig(d_hidden=5, mlp_hidden=4, n_layers=2, d_out=3, d_edge_in=9, **kw), kind, seed)


def _check_same(cfg: ScaleGMNConfig, kind: str, seed: int) -> None:
    """The torch model's parameters, loaded by name into JAX, give the same outputs."""
    tm, jm = _pair(cfg, seed)
    shapes = {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    assert shapes == sgj.param_shapes(cfg)
    nets = _networks(kind, cfg.symmetry, seed)
    tm.eval()
    with torch.no_grad():
        t_out = tm(sgt.collate(nets, torch.float64))
    j_out = jm(sgj.collate(nets))
    if cfg.head == "invariant":
        a, b = _flat(t_out), _flat(j_out)
        assert np.max(np.abs(a - b)) <= 1e-10 * max(1.0, np.abs(a).max())
    else:
        for t, j in ((t_out.node_features, j_out[0]), (t_out.edge_features, j_out[1])):
            a = _flat(t).reshape(-1, _flat(t).shape[-1])
            b = _flat(j).reshape(a.shape)  # both backends stack one-shape batches densely
            assert np.max(np.abs(a - b)) <= 1e-10 * max(1.0, np.abs(a).max())


@settings(max_examples=20, deadline=None)
@given(kw=options, kind=st.sampled_from(["mlp", "cnn"]), seed=st.integers(0, 1000))
def test_the_new_options_have_the_same_names_and_outputs(kw, kind, seed):
    # The original implementation's pieces (io MLPs, phi(rho), io readouts, ...), loaded by name.
    _check_same(option_config(kw), kind, seed)

@pytest.mark.parametrize(("name", "readout"), [("readout.rho.lin.0.weight", "full_graph"),
                                               ("layers.0.upd.io.0.lin.0.weight", "io_nodes"),
                                               ("layers.0.skip.weight", "io_nodes"),
                                               ("readout.proj_in.weight", "io_nodes")])
def test_control_a_new_parameter_that_is_not_read_breaks_parity(name, readout):
    # Negative control: if JAX ignored one of the new parameters, the parity check would see it.
    cfg = ScaleGMNConfig(d_hidden=5, mlp_hidden=4, n_layers=2, d_out=3, d_edge_in=9, symmetry="sign",
                         bidirectional=True, message_receiver=False, layer_norm=True, sign_canon="symmetrize_phi",
                         io_mlps=1, skip_linear=True, readout=readout, input_node_value=1.0)
    tm, _ = _pair(cfg, 0)
    params = {k: jnp.asarray(v.detach().numpy()) for k, v in tm.state_dict().items()}
    params[name] = params[name] * 1.5
    jm = sgj.ScaleGMN(cfg, params=params)
    nets = _networks("mlp", "sign", 0)
    tm.eval()
    with torch.no_grad():
        a = _flat(tm(sgt.collate(nets, torch.float64)))
    # far above the parity tolerance (1e-10 relative); sign networks give small effects
    assert np.max(np.abs(a - _flat(jm(sgj.collate(nets))))) > 1e-7 * max(1.0, np.abs(a).max())

def test_same_gradients():
    cfg = ScaleGMNConfig(d_hidden=6, n_layers=2, d_out=3, bidirectional=True, symmetry="auto")
    tm, jm = _pair(cfg, 0)
    nets = [random_network(NetworkSpec.mlp([2, 5, 4, 2], "relu"), k) for k in range(3)]
    tm.zero_grad()
    tm(sgt.collate(nets, torch.float64)).square().sum().backward()
    batch = sgj.collate(nets)

    def loss(params):
        return jnp.sum(sgj.forward(params, cfg, batch) ** 2)

    grads = jax.grad(loss)(jm.params)
    for name, p in tm.named_parameters():
        a, b = p.grad.numpy(), np.asarray(grads[name])
        assert np.max(np.abs(a - b)) <= 1e-10 * max(1.0, np.abs(a).max()), name


def test_float32_outputs_agree():
    cfg = ScaleGMNConfig(d_hidden=8, n_layers=3, d_out=4, bidirectional=True)
    torch.manual_seed(0)
    tm = sgt.ScaleGMN(cfg).eval()
    jm = sgj.ScaleGMN(cfg, params={k: jnp.asarray(v.numpy()) for k, v in tm.state_dict().items()})
    nets = [random_network(NetworkSpec.siren((2, 8, 8, 1)), k, dtype=np.float32) for k in range(4)]
    with torch.no_grad():
        a = tm(sgt.collate(nets, torch.float32)).numpy()
    b = np.asarray(jm(sgj.collate(nets, jnp.float32)))
    assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, np.abs(a).max())


def test_checkpoints_move_both_ways(tmp_path):
    cfg = ScaleGMNConfig(d_hidden=6, n_layers=2, d_out=3, bidirectional=True)
    torch.manual_seed(1)
    tm = sgt.ScaleGMN(cfg).double().eval()
    nets = [random_network(NetworkSpec.mlp([2, 5, 4, 2], "tanh"), k) for k in range(2)]
    sgt.save_checkpoint(tm, tmp_path / "from_torch")
    jm = sgj.load_checkpoint(tmp_path / "from_torch")
    with torch.no_grad():
        ref = tm(sgt.collate(nets, torch.float64)).numpy()
    np.testing.assert_allclose(np.asarray(jm(sgj.collate(nets))), ref, rtol=1e-10, atol=1e-12)
    jm2 = sgj.ScaleGMN(cfg, key=jax.random.key(3), dtype=jnp.float64)
    sgj.save_checkpoint(jm2, tmp_path / "from_jax")
    tm2 = sgt.load_checkpoint(tmp_path / "from_jax").eval()
    with torch.no_grad():
        got = tm2(sgt.collate(nets, torch.float64)).numpy()
    np.testing.assert_allclose(got, np.asarray(jm2(sgj.collate(nets))), rtol=1e-10, atol=1e-12)
