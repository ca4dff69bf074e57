"""The run folder and the loop refuse what would be silent: a second process on one folder,
non-finite numbers, a task that is not the zoo's, a damaged state, a kill between two writes,
a malformed config file, a full disk. Each test fails on the loop as it was before."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from scalegmn.tasks.cli import app
from scalegmn.tasks.editing import EditConfig
from scalegmn.tasks.run import folder as folder_mod
from scalegmn.tasks.run import protocol
from scalegmn.tasks.run.tasks import ClassificationTask
from scalegmn.tasks.train import STATE_FILE, RunConfig, TrainError, train_run
from scalegmn.weightgraph import ScaleGMNConfig


def _cfg(zoo, **kw):
    base = dict(zoo=str(zoo), model="scalegmn", epochs=3, batch_size=8, warmup_steps=2, threads=1,
                gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=10))
    return RunConfig(**{**base, **kw})


def _epochs(path):
    return [json.loads(x)["epoch"] for x in (path / "metrics.jsonl").read_text().splitlines()]


def _one_line_error(res):
    lines = [x for x in res.output.strip().splitlines() if not x.startswith("note:")]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


HOLDER = textwrap.dedent('''
    import pathlib, sys, time
    from scalegmn.tasks.train import RunConfig, train_run
    cfg = RunConfig.model_validate_json(pathlib.Path(sys.argv[1]).read_text())
    def hold(row):
        pathlib.Path(sys.argv[3]).write_text("running")
        time.sleep(120)
    train_run(cfg, out=sys.argv[2], progress=False, on_epoch=hold)
''')


def test_a_second_process_on_one_folder_is_refused_and_a_dead_owner_taken_over(tiny_zoo, tmp_path):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(_cfg(tiny_zoo, epochs=2, gmn=ScaleGMNConfig(d_hidden=4, n_layers=1, d_out=10)).model_dump_json())
    out, flag = tmp_path / "run", tmp_path / "flag"
    owner = subprocess.Popen([sys.executable, "-c", HOLDER, str(cfg_file), str(out), str(flag)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not flag.exists():
            assert owner.poll() is None, owner.stderr.read() if owner.stderr else ""
            assert time.time() < deadline, "the first run did not reach its first epoch"
            time.sleep(0.2)
        # --resume, so that only the lock (not the "folder holds a run" check) can refuse it
        res = CliRunner().invoke(app, ["train", str(cfg_file), "--out", str(out), "--resume", "--quiet"])
        line = _one_line_error(res)
        assert "in use by another run" in line and f"PID {owner.pid}" in line and "started" in line
        assert _epochs(out) == [0]  # the refused process wrote nothing
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    res = CliRunner().invoke(app, ["train", str(cfg_file), "--out", str(out), "--resume", "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"taking over the lock of PID {owner.pid}" in res.output
    assert _epochs(out) == [0, 1]


def test_non_finite_numbers_in_configs_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="finite"):
        RunConfig(zoo="z", lr=float("inf"))
    with pytest.raises(ValidationError, match="finite"):
        EditConfig(grad_clip=float("nan"))
    with pytest.raises(ValidationError, match="edit_alpha_init"):
        EditConfig(gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, head="equivariant", edit_alpha_init=float("inf")))
    bad = tmp_path / "inf.json"
    bad.write_text('{"zoo": "z", "lr": Infinity}')
    res = CliRunner().invoke(app, ["train", str(bad)])
    assert res.exit_code == 2 and "lr" in res.output and "finite" in res.output


def _nan_from(epoch_step, grad=False):
    """A classification loss that turns non-finite at the `epoch_step`-th training step."""
    calls = {"n": 0}
    real = ClassificationTask.torch_loss_sum

    def loss(self, out, y):
        value = real(self, out, y)
        calls["n"] += 1
        if calls["n"] > epoch_step:
            # a NaN loss, or a finite loss whose gradient is NaN (d sqrt(u)/du at 0 times 0)
            return value + torch.sqrt(0.0 * out.sum()) if grad else value * float("nan")
        return value

    return loss


@pytest.mark.parametrize("grad", [False, True])
def test_a_non_finite_loss_or_gradient_stops_the_run_at_its_last_good_state(tiny_zoo, tmp_path, monkeypatch, grad):
    cfg = _cfg(tiny_zoo)
    steps = 3  # 24 train networks in batches of 8
    out = tmp_path / "r"
    with monkeypatch.context() as m:
        m.setattr(ClassificationTask, "torch_loss_sum", _nan_from(steps + 1, grad))
        with pytest.raises(TrainError, match="epoch 1 step 1") as err:
            train_run(cfg, out=out, progress=False)
    assert ("the gradient norm is nan" if grad else "the loss is nan") in str(err.value)
    assert "epoch 0" in str(err.value) and str(out / STATE_FILE) in str(err.value)
    assert not (out / "result.json").exists()
    # the state of epoch 0 is good and resumable
    resumed = train_run(cfg, out=out, resume=True, progress=False)
    full = train_run(cfg, out=tmp_path / "full", progress=False)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert _epochs(out) == [0, 1, 2]


def test_cli_exits_2_with_one_line_on_a_nan_loss(tiny_zoo, tmp_path, monkeypatch):
    (tmp_path / "cfg.json").write_text(_cfg(tiny_zoo, epochs=1).model_dump_json())
    monkeypatch.setattr(ClassificationTask, "torch_loss_sum", _nan_from(0))
    res = CliRunner().invoke(app, ["train", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "r"), "--quiet"])
    assert "epoch 0 step 0: the loss is nan" in _one_line_error(res)


def test_jax_non_finite_loss_stops_the_run(tiny_zoo, tmp_path, monkeypatch):
    pytest.importorskip("equinox")
    import jax.numpy as jnp

    real = ClassificationTask.jax_loss
    monkeypatch.setattr(ClassificationTask, "jax_loss", lambda self, out, y: real(self, out, y) * jnp.nan)
    cfg = _cfg(tiny_zoo, backend="jax", model="mlp", mlp_hidden=7, epochs=1)  # a width no other test compiles
    with pytest.raises(TrainError, match="epoch 0 step 0: the loss is nan"):
        train_run(cfg, out=tmp_path / "j", progress=False)


def test_task_must_agree_with_the_zoo(tiny_zoo, tiny_cnn_zoo):
    with pytest.raises(TrainError, match=r"regression.*'class'"):
        train_run(_cfg(tiny_zoo, task="regression", epochs=1), progress=False)
    cnn = _cfg(tiny_cnn_zoo, task="classification", epochs=1,
               gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=1, d_edge_in=9))
    with pytest.raises(TrainError, match=r"classification.*'regression'"):
        train_run(cnn, progress=False)


@pytest.fixture
def killed_run(tiny_zoo, tmp_path, monkeypatch):
    """A run killed after epoch 1's metrics row was appended, before its state was written."""
    cfg = _cfg(tiny_zoo)
    real = protocol._write_state

    def kill_before_writing(path, backend, rng, meta):
        if meta["epoch"] == 1:
            raise KeyboardInterrupt
        real(path, backend, rng, meta)

    with monkeypatch.context() as m:
        m.setattr(protocol, "_write_state", kill_before_writing)
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg, out=tmp_path / "r", progress=False)
    assert _epochs(tmp_path / "r") == [0, 1]
    return cfg, tmp_path / "r"


def test_resume_after_a_kill_between_metrics_and_state_logs_each_epoch_once(killed_run):
    cfg, out = killed_run
    train_run(cfg, out=out, resume=True, progress=False)
    assert _epochs(out) == [0, 1, 2]


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_state_is_refused_on_resume_with_one_line(killed_run, tmp_path):
    cfg, out = killed_run
    state = out / STATE_FILE
    good = state.read_bytes()
    _flip(state, len(good) - 5)  # inside the last tensor's bytes: parses fine, wrong content
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    cmd = ["train", str(tmp_path / "cfg.json"), "--out", str(out), "--resume", "--quiet"]
    line = _one_line_error(CliRunner().invoke(app, cmd))
    assert str(state) in line and "checksum" in line and "delete it" in line
    state.write_bytes(good[:100])  # truncated: the header does not parse
    line = _one_line_error(CliRunner().invoke(app, cmd))
    assert str(state) in line and "corrupt" in line
    state.write_bytes(good)
    assert CliRunner().invoke(app, cmd).exit_code == 0


def test_a_state_with_nan_or_a_wrong_dtype_is_refused(tmp_path):
    path = tmp_path / STATE_FILE
    folder_mod.save_state(path, {"model.w": np.array([1.0, np.nan], np.float32)}, {"meta": {}})
    with pytest.raises(TrainError, match=r"model\.w.*NaN"):
        folder_mod.load_state(path)
    folder_mod.save_state(path, {"model.w": np.array([1 + 2j], np.complex64)}, {"meta": {}})
    with pytest.raises(TrainError, match="complex64"):
        folder_mod.load_state(path)
    folder_mod.save_state(path, {"model.w": np.array([1.0], np.float32)}, {"meta": {}})
    tensors, info = folder_mod.load_state(path)  # the control: a good state loads
    assert tensors["model.w"].tolist() == [1.0] and info == {"meta": {}}


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("zoo: z\nepochs: 3\ngmn: {d_hidden: 8\nlr: 0.1\n")
    line = _one_line_error(CliRunner().invoke(app, ["train", str(bad)]))
    assert f"{bad}:" in line and "YAML" in line
    lineno = int(line.split(f"{bad}:")[1].split(":")[0])
    assert lineno in (3, 4)
    line = _one_line_error(CliRunner().invoke(app, ["edit", str(tmp_path), "--config", str(bad)]))
    assert f"{bad}:{lineno}" in line


def test_a_full_disk_is_one_line_naming_the_path(tiny_zoo, tmp_path, monkeypatch):
    (tmp_path / "cfg.json").write_text(_cfg(tiny_zoo, epochs=1).model_dump_json())
    real = folder_mod.atomic_write

    def full(path, data, **kw):
        if str(path).endswith(STATE_FILE):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, **kw)

    monkeypatch.setattr(folder_mod, "atomic_write", full)
    res = CliRunner().invoke(app, ["train", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "r"), "--quiet"])
    line = _one_line_error(res)
    assert str(tmp_path / "r" / STATE_FILE) in line and "no space left" in line


def test_a_gpu_that_is_not_there_stops_before_any_work(tiny_zoo, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "cfg.json").write_text(_cfg(tiny_zoo, epochs=1).model_dump_json())
    for device in ("cuda", "cuda:1"):
        res = CliRunner().invoke(app, ["train", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "g"),
                                       "--device", device, "--quiet"])
        assert "no GPU" in _one_line_error(res) and device in res.output
        assert not (tmp_path / "g").exists()
    res = CliRunner().invoke(app, ["train", str(tmp_path / "cfg.json"), "--device", "gpu0"])
    assert "--device 'gpu0'" in _one_line_error(res)
    res = CliRunner().invoke(app, ["edit", str(tiny_zoo), "--device", "cuda", "--out", str(tmp_path / "e")])
    assert "no GPU" in _one_line_error(res) and not (tmp_path / "e").exists()
    with pytest.raises(ValidationError, match="device"):
        RunConfig(zoo="z", device="tpu")


def test_device_cpu_trains_on_the_cpu(tiny_zoo, tmp_path):
    (tmp_path / "cfg.json").write_text(_cfg(tiny_zoo, epochs=1).model_dump_json())
    res = CliRunner().invoke(app, ["train", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "c"),
                                   "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "c" / "run.json").read_text())["device"] == "cpu"
    from scalegmn.torch import load_checkpoint

    model = load_checkpoint(tmp_path / "c" / "best")
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_bf16_autocast_trains_and_changes_the_arithmetic(tiny_zoo, tmp_path, monkeypatch):
    seen = []
    real = torch.nn.functional.linear

    def spy(x, w, *a, **k):  # records the dtype autocast gives the matmuls
        out = real(x, w, *a, **k)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    results = {}
    for precision in ("float32", "bf16"):
        seen.clear()
        cfg = _cfg(tiny_zoo, epochs=1).model_copy(update={"precision": precision})
        (tmp_path / f"{precision}.json").write_text(cfg.model_dump_json())
        res = CliRunner().invoke(app, ["train", str(tmp_path / f"{precision}.json"), "--out",
                                       str(tmp_path / precision), "--quiet"])
        assert res.exit_code == 0, res.output
        rows = [json.loads(r) for r in (tmp_path / precision / "metrics.jsonl").read_text().splitlines()]
        results[precision] = (set(seen), rows)
    assert results["float32"][0] == {torch.float32}
    assert torch.bfloat16 in results["bf16"][0]  # the control: float32 runs never see bfloat16
    assert results["bf16"][1][0]["loss"] != results["float32"][1][0]["loss"]
    with pytest.raises(ValidationError, match="torch-backend option"):
        RunConfig(zoo="z", precision="bf16", backend="jax")


def test_a_state_without_checksum_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / STATE_FILE
    save_file({"model.w": np.ones(2, np.float32)}, str(path), metadata={"state": "{}"})
    with pytest.raises(TrainError, match="no checksum"):
        folder_mod.load_state(path)
