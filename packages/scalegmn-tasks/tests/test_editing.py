"""INR editing: renderer and dilation against references, gradients, equivariance, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.ndimage import grey_dilation
from typer.testing import CliRunner

from scalegmn.symmetry import act, sample_element
from scalegmn.tasks import sources
from scalegmn.tasks.cli import app
from scalegmn.tasks.datasets import open_zoo
from scalegmn.tasks.editing import EditConfig, EditingError, dilate, render_sirens, train_editing
from scalegmn.tasks.zoo import build_inr_zoo
from scalegmn.tasks.zoo.siren import coordinate_grid
from scalegmn.torch import DenseGraphs, ScaleGMN, ScaleGMNConfig, collate
from scalegmn.weightgraph import NetworkSpec, forward, random_network

torch.set_num_threads(1)


def _reference_render(net, h, w):
    grid = coordinate_grid(h, w, torch.float64).numpy()
    return forward(net, grid)[:, 0].reshape(h, w)


@pytest.mark.parametrize(("widths", "w0", "offset", "hw"), [
    ((2, 16, 16, 1), 30.0, 0.5, (28, 28)),
    ((2, 8, 1), 3.0, 0.0, (7, 11)),
    ((2, 12, 6, 5, 1), 10.0, -0.25, (5, 9)),
])
def test_render_matches_numpy_forward(widths, w0, offset, hw):
    spec = NetworkSpec.siren(widths, w0=w0, output_offset=offset)
    nets = [random_network(spec, rng=k) for k in range(4)]
    ref = np.stack([_reference_render(n, *hw) for n in nets])
    b = collate(nets, torch.float64)
    img = render_sirens(b, height=hw[0], width=hw[1])
    assert img.shape == (4, *hw) and img.dtype == torch.float64
    np.testing.assert_allclose(img.numpy(), ref, rtol=0, atol=1e-12 * max(1.0, np.abs(ref).max()))
    ws = [torch.from_numpy(np.stack([n.weights[k] for n in nets])) for k in range(spec.n_layers)]
    bs = [torch.from_numpy(np.stack([n.biases[k] for n in nets])) for k in range(spec.n_layers)]
    np.testing.assert_allclose(render_sirens((ws, bs), spec, *hw).numpy(), ref, rtol=0, atol=1e-12)


def test_renderer_refuses_networks_that_are_not_sirens():
    relu = collate([random_network(NetworkSpec.mlp([2, 8, 1]), rng=0)], torch.float64)
    with pytest.raises(EditingError, match="sine"):
        render_sirens(relu)
    rgb = collate([random_network(NetworkSpec.siren((2, 8, 3)), rng=0)], torch.float64)
    with pytest.raises(EditingError, match="widths"):
        render_sirens(rgb)
    with pytest.raises(EditingError, match="NetworkSpec"):
        render_sirens(([torch.zeros(1, 8, 2)], [torch.zeros(1, 8)]))
    with pytest.raises(TypeError):
        render_sirens(torch.zeros(3, 3), NetworkSpec.siren((2, 8, 1)))  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(3, 28, 28), (2, 5, 9), (1, 1, 4), (6, 6)])
def test_dilate_matches_scipy(shape):
    x = torch.from_numpy(np.random.default_rng(sum(shape)).random(shape))
    got = dilate(x).numpy()
    imgs = x.numpy() if x.ndim == 3 else x.numpy()[None]
    ref = np.stack([grey_dilation(a, size=(3, 3)) for a in imgs])
    np.testing.assert_array_equal(got, ref if x.ndim == 3 else ref[0])
    assert (got >= x.numpy()).all() and (got > x.numpy()).any()


def _sirens(n, seed=0, spec=None):
    spec = spec or NetworkSpec.siren((2, 8, 8, 1), w0=30.0, output_offset=0.5)
    return [random_network(spec, rng=seed + k) for k in range(n)]


def test_pixel_loss_reaches_every_parameter():
    torch.manual_seed(0)
    cfg = ScaleGMNConfig(d_hidden=8, n_layers=2, head="equivariant", bidirectional=True, edit_alpha_init=0.1)
    model = ScaleGMN(cfg).double()
    b = collate(_sirens(3), torch.float64)
    out = model(b)
    assert isinstance(out, DenseGraphs)
    target = dilate(render_sirens(b, height=12, width=12)).detach()
    loss = torch.nn.functional.mse_loss(render_sirens(out, height=12, width=12), target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def _edit(model, nets):
    out = model(collate(nets, torch.float64))
    assert isinstance(out, DenseGraphs)
    return out.to_networks(), render_sirens(out, height=16, width=16).detach().numpy()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_edit_is_sign_and_permutation_equivariant(bidirectional):
    torch.manual_seed(1)
    cfg = ScaleGMNConfig(d_hidden=8, n_layers=2, head="equivariant", bidirectional=bidirectional,
                         edit_alpha_init=1.0)
    model = ScaleGMN(cfg).double().eval()
    nets = _sirens(3, seed=10)
    rng = np.random.default_rng(2)
    elems = [sample_element(n.spec, rng) for n in nets]
    assert all(any((q < 0).any() for q in g.multipliers) for g in elems)
    with torch.no_grad():
        edited, img = _edit(model, nets)
        edited_g, img_g = _edit(model, [act(g, n) for g, n in zip(elems, nets, strict=True)])
    for g, e, eg in zip(elems, edited, edited_g, strict=True):
        expected = act(g, e)
        for a, c in zip(expected.weights + expected.biases, eg.weights + eg.biases, strict=True):
            np.testing.assert_allclose(c, a, rtol=0, atol=1e-10)
    np.testing.assert_allclose(img_g, img, rtol=0, atol=1e-10)
    unedited = np.stack([_reference_render(n, 16, 16) for n in nets])
    assert np.abs(img - unedited).max() > 1e-3  # the edit is not the identity


def test_permutation_only_model_is_not_sign_equivariant():
    torch.manual_seed(1)
    cfg = ScaleGMNConfig(d_hidden=8, n_layers=2, head="equivariant", symmetry="permutation",
                         edit_alpha_init=1.0)
    model = ScaleGMN(cfg).double().eval()
    nets = _sirens(3, seed=10)
    rng = np.random.default_rng(2)
    perms = [sample_element(n.spec, rng, scale=False) for n in nets]
    signs = [sample_element(n.spec, rng) for n in nets]
    with torch.no_grad():
        _, img = _edit(model, nets)
        _, img_p = _edit(model, [act(g, n) for g, n in zip(perms, nets, strict=True)])
        _, img_s = _edit(model, [act(g, n) for g, n in zip(signs, nets, strict=True)])
    np.testing.assert_allclose(img_p, img, rtol=0, atol=1e-10)  # permutations are still fine
    assert np.abs(img_s - img).max() > 1e-4


def test_config_refuses_bad_values():
    with pytest.raises(ValidationError, match="equivariant"):
        EditConfig(gmn=ScaleGMNConfig(d_hidden=8, n_layers=1))
    with pytest.raises(ValidationError, match="lerning_rate"):
        EditConfig.model_validate({"lerning_rate": 1e-3})
    with pytest.raises(ValidationError):
        EditConfig(lr=-1.0)


@pytest.fixture(scope="module")
def digits_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "digits"
    build_inr_zoo(out, "digits", workers=1, count=40, steps=40, seed=0, progress=False,
                  val_fraction=0.2, test_fraction=0.2)
    return out


def _small_config(**kw):
    return EditConfig(gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, head="equivariant", edit_alpha_init=0.01),
                      lr=1e-2, warmup_steps=1, batch_size=8, **kw)


def test_training_lowers_the_loss_and_targets_are_the_dilated_sources(digits_zoo, tmp_path):
    r = train_editing(digits_zoo, _small_config(epochs=6), progress=False, out=tmp_path)
    losses = [row["loss"] for row in r["history"]]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert r["target"] == "source" and r["image_shape"] == [8, 8]
    assert r["val_mse"] == min(row["val_mse"] for row in r["history"])
    assert (tmp_path / "editing.png").stat().st_size > 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 6
    # the identity baseline, recomputed from the source images the zoo records
    ds = open_zoo(digits_zoo, "test")
    imgs = sources.digits().as_float()[ds.columns["group"]]
    renders = np.stack([_reference_render(ds[i][0].astype(np.float64), 8, 8) for i in range(len(ds))])
    target = np.stack([grey_dilation(a, size=(3, 3)) for a in imgs])
    assert r["identity_test_mse"] == pytest.approx(float(((renders - target) ** 2).mean()), rel=1e-4)


def test_unavailable_source_falls_back_to_renders(digits_zoo, monkeypatch):
    def gone(name):
        raise sources.SourceError("not installed")

    monkeypatch.setattr(sources, "load_source", gone)
    with pytest.raises(EditingError, match="cannot build source-image targets"):
        train_editing(digits_zoo, _small_config(epochs=1, target="source"), progress=False)
    with pytest.warns(UserWarning, match="dilated renders"):
        r = train_editing(digits_zoo, _small_config(epochs=1), progress=False)
    assert r["target"] == "render" and "not installed" in r["target_note"]


def test_zoo_that_is_not_sirens_is_refused(tmp_path):
    from scalegmn.tasks.sources import ImageSource
    from scalegmn.tasks.zoo import build_cnn_zoo

    d = sources.digits()
    src = ImageSource.from_array(d.images[:120], d.labels[:120], name="digits120")
    build_cnn_zoo(tmp_path / "cnn", src, count=3, channels=2, n_conv=1, epochs=(1,), batch_sizes=(32,),
                  train_size_range=(40, 60), checkpoints=(1.0,), test_size=20, shard_size=3,
                  val_fraction=0.34, test_fraction=0.34, progress=False)
    with pytest.raises(EditingError, match="INR"):
        train_editing(tmp_path / "cnn", _small_config(epochs=1), progress=False)


def test_cli_edit(digits_zoo, tmp_path):
    res = CliRunner().invoke(app, ["edit", str(digits_zoo), "--epochs", "1", "--out", str(tmp_path),
                                   "--d-hidden", "8", "--n-layers", "1"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["target"] == "source" and summary["best_epoch"] == 0
    assert (tmp_path / "editing.png").exists() and (tmp_path / "result.json").exists()


def test_jax_renderer_matches_numpy_forward():
    pytest.importorskip("equinox")
    import jax.numpy as jnp

    from scalegmn.jax import collate as jax_collate
    from scalegmn.tasks.editing import render_sirens_jax

    spec = NetworkSpec.siren((2, 12, 6, 1), w0=10.0, output_offset=-0.25)
    nets = [random_network(spec, rng=k, dtype="float32") for k in range(3)]
    b = jax_collate(nets, jnp.float32)
    img = np.asarray(render_sirens_jax(b.node_features, b.edge_features, spec, 5, 9))
    ref = np.stack([_reference_render(n.astype(np.float64), 5, 9) for n in nets])
    np.testing.assert_allclose(img, ref, rtol=1e-5, atol=1e-5)
    # negative control: the edges read in the transposed order draw another image
    lay_w = b.edge_features.reshape(3, -1)
    swapped = jnp.concatenate([lay_w[:, :24].reshape(3, 12, 2).transpose(0, 2, 1).reshape(3, 24),
                               lay_w[:, 24:]], axis=1)[..., None]
    other = np.asarray(render_sirens_jax(b.node_features, swapped, spec, 5, 9))
    assert np.abs(other - ref).max() > 1e-2


def test_cli_edit_with_the_jax_backend_resumes(digits_zoo, tmp_path):
    """`scalegmn edit --backend jax` trains through the run protocol and continues with --resume."""
    pytest.importorskip("equinox")
    args = ["edit", str(digits_zoo), "--out", str(tmp_path / "j"), "--d-hidden", "8", "--n-layers", "1",
            "--backend", "jax", "--no-progress"]
    res = CliRunner().invoke(app, [*args, "--epochs", "1"])
    assert res.exit_code == 0, res.output
    first = json.loads(res.output.strip().splitlines()[-1])
    assert first["config"]["backend"] == "jax" and first["target"] == "source"
    assert 0 < first["test_mse"] < 1 and (tmp_path / "j" / "editing.png").exists()
    res = CliRunner().invoke(app, [*args, "--epochs", "1"])
    assert res.exit_code == 2 and "--resume" in res.output  # the folder holds a run
    run = json.loads((tmp_path / "j" / "run.json").read_text())
    assert run["backend"] == "jax" and run["zoo"] == str(digits_zoo)


def test_a_killed_editing_run_resumes_exactly(digits_zoo, tmp_path, monkeypatch):
    """Editing runs through the run protocol: a kill after epoch 1 and `resume=True` end where
    the uninterrupted run ends (losses, validation MSE, the test MSE at the best epoch)."""
    from scalegmn.tasks.run import protocol

    cfg = _small_config(epochs=3)
    full = train_editing(digits_zoo, cfg, progress=False, out=tmp_path / "full")

    class Killed(Exception):
        pass

    real = protocol._write_state

    def kill_at_epoch_1(path, backend, rng, meta):
        real(path, backend, rng, meta)
        if meta["epoch"] == 1:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(protocol, "_write_state", kill_at_epoch_1)
        with pytest.raises(Killed):
            train_editing(digits_zoo, cfg, progress=False, out=tmp_path / "part")
    resumed = train_editing(digits_zoo, cfg, progress=False, out=tmp_path / "part", resume=True)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert resumed["test_mse"] == full["test_mse"] and resumed["best_epoch"] == full["best_epoch"]
    for a, b in zip(full["model"].state_dict().values(), resumed["model"].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # negative control: another seed gives other losses, so the equality above is not trivial
    other = train_editing(digits_zoo, _small_config(epochs=1, seed=1), progress=False)
    assert other["history"][0]["loss"] != full["history"][0]["loss"]


def test_cli_edit_under_torchrun_matches_one_process(digits_zoo, tmp_path):
    """`scalegmn edit` under torchrun (2 CPU processes, gloo) follows the single-process run."""
    import os
    import subprocess
    import sys

    cfg = _small_config(epochs=2)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    one = train_editing(digits_zoo, cfg, progress=False, out=tmp_path / "one")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "scalegmn.tasks.cli", "edit", str(digits_zoo), "--config", str(tmp_path / "cfg.json"),
           "--out", str(tmp_path / "two"), "--no-progress"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    np.testing.assert_allclose([h["loss"] for h in two["history"]], [h["loss"] for h in one["history"]],
                               rtol=1e-5)
    assert two["test_mse"] == pytest.approx(one["test_mse"], rel=1e-4)


EDIT_TWO_DEVICES = """
import json, sys
import jax
from scalegmn.tasks.editing import EditConfig, train_editing
assert jax.device_count() == 2, jax.devices()
r = train_editing(sys.argv[1], EditConfig.model_validate_json(sys.argv[2]), progress=False)
print(json.dumps({"loss": [h["loss"] for h in r["history"]], "test": r["test_mse"]}))
"""


def test_jax_editing_on_two_devices_follows_one_device(digits_zoo):
    """Editing with the JAX backend is data parallel over (forced host) devices: the
    one-device losses to float32 rounding."""
    pytest.importorskip("equinox")
    import os
    import subprocess
    import sys

    cfg = _small_config(epochs=2, backend="jax")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", EDIT_TWO_DEVICES, str(digits_zoo), cfg.model_dump_json()],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    one = train_editing(digits_zoo, cfg, progress=False)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    two = json.loads(stdout.strip().splitlines()[-1])
    assert two["loss"][1] < two["loss"][0]
    np.testing.assert_allclose(two["loss"], [h["loss"] for h in one["history"]], rtol=1e-5)
    assert two["test"] == pytest.approx(one["test_mse"], rel=1e-5)
