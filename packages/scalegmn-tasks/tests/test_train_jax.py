"""`train_run` with `backend="jax"`: the torch loop's protocol and run folder, resumable exactly,
data parallel over (forced host) devices, checkpoints readable by the torch backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("equinox")

from scalegmn.tasks.cli import app
from scalegmn.tasks.run.backends.jax import JaxBackend
from scalegmn.tasks.train import STATE_FILE, RunConfig, TrainError, evaluate_run, train_run
from scalegmn.weightgraph import ScaleGMNConfig


def _cfg(zoo, **kw):
    base = dict(zoo=str(zoo), model="scalegmn", epochs=2, batch_size=8, warmup_steps=2, backend="jax",
                gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=10))
    return RunConfig(**{**base, **kw})


def _state(path):
    from safetensors.numpy import load_file

    return load_file(str(path / STATE_FILE))


def _kill_after_first_epoch(row):
    if row["epoch"] == 0:
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def resumed_runs(tiny_zoo, tmp_path_factory):
    """A 2-epoch run, and the same run killed after epoch 0 (a copy kept before resuming)."""
    tmp = tmp_path_factory.mktemp("jaxruns")
    cfg = _cfg(tiny_zoo)
    full = train_run(cfg, out=tmp / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, out=tmp / "part", progress=False, on_epoch=_kill_after_first_epoch)
    shutil.copytree(tmp / "part", tmp / "killed")
    resumed = train_run(cfg, out=tmp / "part", resume=True, progress=False)
    return cfg, tmp, full, resumed


def test_a_killed_jax_run_resumes_exactly(resumed_runs):
    _, tmp, full, resumed = resumed_runs
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert [h["val_acc"] for h in resumed["history"]] == [h["val_acc"] for h in full["history"]]
    a, b = _state(tmp / "full"), _state(tmp / "part")
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    for k in a:  # bit for bit: model, AdamW moments and step counts
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    rows = [json.loads(x) for x in (tmp / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert (tmp / "part" / "curves.png").stat().st_size > 0
    result = json.loads((tmp / "part" / "result.json").read_text())
    assert {"task", "metric", "best_epoch", "val", "test", "val_acc", "test_acc", "seconds", "history",
            "n_train", "n_params_model"} <= result.keys()


def test_resume_without_the_optimiser_state_differs(resumed_runs, monkeypatch):
    """Negative control: resuming with a fresh AdamW state does not give the uninterrupted run."""
    cfg, tmp, _, _ = resumed_runs
    load = JaxBackend.load_state

    def fresh_optimiser(self, tensors, info, path):
        fresh = self.opt_state
        load(self, tensors, info, path)
        self.opt_state = fresh

    monkeypatch.setattr(JaxBackend, "load_state", fresh_optimiser)
    train_run(cfg, out=tmp / "killed", resume=True, progress=False)
    a, b = _state(tmp / "full"), _state(tmp / "killed")
    assert any(not np.allclose(a[k], b[k], rtol=1e-6) for k in a if k.startswith("model."))


def test_best_checkpoint_is_portable_to_torch(resumed_runs):
    """`evaluate_run` of the JAX run agrees with the torch backend scoring the same `best/`."""
    pytest.importorskip("torch")
    from scalegmn.tasks.train import _eval_batches, prepare_run_data, score
    from scalegmn.torch import load_checkpoint

    cfg, tmp, _, resumed = resumed_runs
    value, metric = evaluate_run(tmp / "part", "test")
    assert metric == "accuracy" and value == pytest.approx(resumed["test"])
    data, _ = prepare_run_data(cfg)
    nets, ys = data["test"]
    torch_value = score(load_checkpoint(tmp / "part" / "best"), _eval_batches(cfg, nets, ys), True)
    assert torch_value == pytest.approx(value)


def test_resuming_a_torch_run_with_the_jax_backend_is_refused(tiny_zoo, tmp_path):
    cfg = _cfg(tiny_zoo, epochs=1, backend="torch", model="mlp", mlp_hidden=8)
    train_run(cfg, out=tmp_path / "r", progress=False)
    with pytest.raises(TrainError, match="backend"):
        train_run(cfg.model_copy(update={"backend": "jax"}), out=tmp_path / "r", resume=True, progress=False)


def test_mlp_baseline_trains_and_evaluates(tiny_zoo, tmp_path):
    cfg = _cfg(tiny_zoo, model="mlp", mlp_hidden=16)
    r = train_run(cfg, out=tmp_path / "m", progress=False)
    n = _n_params(tiny_zoo)
    assert r["n_params_model"] == (n + 1) * 16 + (16 + 1) * 16 + (16 + 1) * 10
    assert all(h["loss"] > 0 for h in r["history"]) and r["history"][1]["loss"] != r["history"][0]["loss"]
    value, metric = evaluate_run(tmp_path / "m", "test")
    assert metric == "accuracy" and value == pytest.approx(r["test"])
    # the best weights carry the torch Sequential names: the torch baseline loads them as they are
    pytest.importorskip("torch")
    from safetensors.torch import load_file

    from scalegmn.tasks.train import build_model

    build_model(cfg, n).load_state_dict(load_file(str(tmp_path / "m" / "best" / "model.safetensors")))


def _n_params(zoo):
    from scalegmn.tasks.datasets import open_zoo

    return open_zoo(zoo, "train")[0][0].n_params()


def test_generalisation_prediction_with_jax(tiny_cnn_zoo, tmp_path):
    """Regression (MSE of the sigmoid, Kendall's tau), on the MLP baseline to keep compilation short."""
    cfg = _cfg(tiny_cnn_zoo, model="mlp", mlp_hidden=16, batch_size=4,
               gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=1, d_edge_in=9))
    r = train_run(cfg, out=tmp_path / "g", progress=False)
    assert r["task"] == "regression" and r["metric"] == "kendall_tau" and "val_tau" in r["history"][0]
    assert -1.0 <= r["test_tau"] <= 1.0 and 0 < r["history"][0]["loss"] < 1
    value, metric = evaluate_run(tmp_path / "g", "test")
    assert metric == "kendall_tau" and value == pytest.approx(r["test"])


def test_clear_errors_for_missing_jax_and_torchrun(tiny_zoo, tmp_path, monkeypatch):
    cfg = _cfg(tiny_zoo)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainError, match="devices"):
        train_run(cfg, out=tmp_path / "a", progress=False)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setitem(sys.modules, "equinox", None)
    with pytest.raises(TrainError, match="install scalegmn-jax"):
        train_run(cfg, out=tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_backend_flag_overrides_the_config(tiny_zoo, tmp_path):
    (tmp_path / "cfg.json").write_text(_cfg(tiny_zoo, backend="torch", model="mlp", mlp_hidden=8,
                                            epochs=1).model_dump_json())
    res = CliRunner().invoke(app, ["train", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "r"),
                                   "--backend", "jax", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r" / "run.json").read_text())["backend"] == "jax"
    res = CliRunner().invoke(app, ["train", str(tmp_path / "cfg.json"), "--backend", "tpu"])
    assert res.exit_code == 2 and "backend" in res.output


TWO_DEVICES = textwrap.dedent('''
    import json, sys
    import jax
    from scalegmn.tasks.train import RunConfig, train_run
    assert jax.device_count() == 2, jax.devices()
    cfg = RunConfig.model_validate_json(sys.argv[1])
    r = train_run(cfg, out=sys.argv[2], progress=False)
    print(json.dumps({"loss": [h["loss"] for h in r["history"]], "torch": "torch" in sys.modules}))
''')


def test_two_devices_follow_the_one_device_run(tiny_zoo, tmp_path):
    """Data parallel over two forced host devices gives the one-device losses (float32).

    The config is the resume test's, so the one-device run reuses its compiled step."""
    cfg = _cfg(tiny_zoo)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", TWO_DEVICES, cfg.model_dump_json(), str(tmp_path / "two")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    one = train_run(cfg, out=tmp_path / "one", progress=False)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    two = json.loads(stdout.strip().splitlines()[-1])
    assert not two["torch"], "the JAX path imported torch"
    assert len(set(two["loss"])) == 2
    np.testing.assert_allclose(two["loss"], [h["loss"] for h in one["history"]], rtol=1e-5)
    a, b = _state(tmp_path / "one"), _state(tmp_path / "two")
    for k in a:
        if k.startswith("model."):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_jax_schedule_is_the_torch_schedule(schedule):
    """The optax schedule of each `lr_schedule` gives `lr * lr_factor` at every step (torch's LambdaLR)."""
    import optax

    from scalegmn.jax import make_optimizer
    from scalegmn.tasks.run.config import lr_factor

    opt = make_optimizer(lr=1.0, weight_decay=0.0, warmup_steps=3, clip_norm=None, lr_schedule=schedule,
                         total_steps=11)
    params = {"w": np.zeros(1, np.float32)}
    state = opt.init(params)
    seen = []
    for _ in range(13):  # past the end: the cosine stays at 0
        # plain AdamW at step t moves a parameter by lr_t * m_hat / (sqrt(v_hat) + eps) = lr_t for gradient 1
        upd, state = opt.update({"w": np.ones(1, np.float32)}, state, params)
        seen.append(-float(optax.apply_updates(params, upd)["w"][0]))
    want = [lr_factor(s, 3, 11, schedule) for s in range(13)]
    # float32 AdamW (without jax_enable_x64): its bias corrections 1 - beta**t round at about
    # 1e-5 relative; the two schedules differ by 0.04 or more after the warm-up
    np.testing.assert_allclose(seen, want, rtol=5e-5, atol=1e-6)


def test_a_cosine_schedule_without_total_steps_is_refused():
    from scalegmn.jax import make_optimizer

    with pytest.raises(ValueError, match="total_steps"):
        make_optimizer(lr_schedule="cosine")
