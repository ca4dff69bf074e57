"""Training runs on a tiny zoo: every model kind trains; bad configs are refused up front."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from scalegmn.tasks.cli import app
from scalegmn.tasks.train import (
    STATE_FILE,
    RunConfig,
    TrainError,
    evaluate_run,
    kendall_tau,
    prepare_inputs,
    train_run,
)
from scalegmn.weightgraph import ScaleGMNConfig


@pytest.mark.parametrize("kind", ["scalegmn", "gmn", "gmn_canon", "mlp"])
def test_every_model_kind_trains(tiny_zoo, tmp_path, kind):
    cfg = RunConfig(zoo=str(tiny_zoo), model=kind, epochs=2, batch_size=8,
                    gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=10, bidirectional=kind == "scalegmn"))
    log = tmp_path / "m.jsonl"
    r = train_run(cfg, log_path=log, progress=False)
    assert 0.0 <= r["test_acc"] <= 1.0 and r["best_epoch"] in (0, 1)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [0, 1]
    assert all(row["loss"] > 0 for row in rows)


def test_baseline_inputs_are_transformed(tiny_zoo):
    from scalegmn.tasks.datasets import open_zoo

    net = open_zoo(tiny_zoo, "train")[0][0]
    assert prepare_inputs("scalegmn", [net])[0] is net
    assert not prepare_inputs("gmn", [net])[0].equals(net)


def test_unknown_keys_and_bad_values_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"zoo": "x", "lerning_rate": 0.1}))
    res = CliRunner().invoke(app, ["train", str(bad)])
    assert res.exit_code == 2 and "lerning_rate" in res.output
    bad.write_text(json.dumps({"zoo": "x", "lr": -1}))
    res = CliRunner().invoke(app, ["train", str(bad)])
    assert res.exit_code == 2 and "lr" in res.output


def test_zoo_that_does_not_fit_the_model_is_refused(tiny_zoo):
    cfg = RunConfig(zoo=str(tiny_zoo), model="scalegmn", epochs=1,
                    gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=10, max_hidden_layers=1, positional_encoding=True))
    with pytest.raises(TrainError, match="max_hidden_layers"):
        train_run(cfg, progress=False)


def _small(zoo, **kw):
    base = dict(zoo=str(zoo), model="scalegmn", epochs=3, batch_size=8, warmup_steps=2, threads=1,
                gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=10, bidirectional=True, dropout=0.1))
    return RunConfig(**{**base, **kw})


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path / STATE_FILE))


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_a_killed_run_resumes_exactly(tiny_zoo, tmp_path, schedule):
    cfg = _small(tiny_zoo, lr_schedule=schedule)
    full = train_run(cfg, out=tmp_path / "full", progress=False)

    def kill(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, out=tmp_path / "part", progress=False, on_epoch=kill)
    resumed = train_run(cfg, out=tmp_path / "part", resume=True, progress=False)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    a, b = _state(tmp_path / "full"), _state(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the metrics log holds each epoch once
    rows = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert (tmp_path / "part" / "curves.png").stat().st_size > 0
    # the best model of the run reproduces the reported test metric
    value, metric = evaluate_run(tmp_path / "part", "test")
    assert metric == "accuracy" and value == pytest.approx(resumed["test"])


def test_the_schedule_of_a_run_follows_lr_factor_to_its_end(tiny_zoo, tmp_path):
    """The learning rate of the run's last step is lr * lr_factor: 0 for the cosine, lr for the constant.

    Both runs share everything else; their losses part after the warm-up (the schedule is read).
    """
    from scalegmn.tasks.run.config import lr_factor
    from scalegmn.tasks.run.folder import load_state

    runs = {}
    for schedule in ("constant", "cosine"):
        cfg = _small(tiny_zoo, lr_schedule=schedule, lr=1e-2)
        runs[schedule] = train_run(cfg, out=tmp_path / schedule, progress=False)
        _, info = load_state(tmp_path / schedule / STATE_FILE)
        sched = info["backend"]["sched"]
        total = sched["last_epoch"]  # LambdaLR counts the steps taken
        assert total == cfg.epochs * -(-runs[schedule]["n_train"] // cfg.batch_size)
        assert sched["_last_lr"][0] == pytest.approx(1e-2 * lr_factor(total, 2, total, schedule), abs=1e-15)
    assert runs["cosine"]["history"][-1]["loss"] != runs["constant"]["history"][-1]["loss"]
    assert lr_factor(3, 2, 10, "cosine") < 1.0 == lr_factor(3, 2, 10, "constant")


def test_lr_factor_warms_up_then_decays_to_zero():
    from scalegmn.tasks.run.config import lr_factor

    warm = [lr_factor(s, 4, 20, "cosine") for s in range(4)]
    assert warm == [0.25, 0.5, 0.75, 1.0]
    decay = [lr_factor(s, 4, 20, "cosine") for s in range(4, 21)]
    assert decay[0] == 1.0 and decay[-1] == pytest.approx(0.0, abs=1e-15)
    assert decay[8] == pytest.approx(0.5)  # halfway through the decay
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert [lr_factor(s, 0, 5, "cosine") for s in (0, 5)] == [1.0, pytest.approx(0.0, abs=1e-15)]
    assert {lr_factor(s, 4, 20) for s in range(3, 40)} == {1.0}


def test_resume_without_state_differs(tiny_zoo, tmp_path):
    """Negative control: a fresh start after the kill does not give the uninterrupted run."""
    cfg = _small(tiny_zoo, epochs=2)
    full = train_run(cfg, out=tmp_path / "full", progress=False)
    again = train_run(_small(tiny_zoo, epochs=1, seed=1), progress=False)
    assert again["history"][0]["loss"] != full["history"][0]["loss"]


def test_resume_refuses_a_changed_config_and_a_reused_folder(tiny_zoo, tmp_path):
    train_run(_small(tiny_zoo, epochs=1), out=tmp_path / "r", progress=False)
    with pytest.raises(TrainError, match="lr"):
        train_run(_small(tiny_zoo, epochs=1, lr=0.5), out=tmp_path / "r", resume=True, progress=False)
    with pytest.raises(TrainError, match="--resume"):
        train_run(_small(tiny_zoo, epochs=1), out=tmp_path / "r", progress=False)
    res = CliRunner().invoke(app, ["train", str(tmp_path / "missing.json")])
    assert res.exit_code == 2 and "missing.json" in res.output


def test_kendall_tau():
    x = np.arange(10.0)
    assert kendall_tau(x, x) == pytest.approx(1.0)
    assert kendall_tau(x, -x) == pytest.approx(-1.0)
    assert kendall_tau(np.zeros(10), x) == 0.0


def test_generalisation_prediction_reports_kendall_tau(tiny_cnn_zoo, tmp_path):
    cfg = RunConfig(zoo=str(tiny_cnn_zoo), model="scalegmn", epochs=2, batch_size=4, threads=1,
                    gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=1, d_edge_in=9))
    r = train_run(cfg, out=tmp_path / "g", progress=False)
    assert r["task"] == "regression" and r["metric"] == "kendall_tau"
    assert -1.0 <= r["test_tau"] <= 1.0 and "val_tau" in r["history"][0]
    value, metric = evaluate_run(tmp_path / "g", "test")
    assert metric == "kendall_tau" and value == pytest.approx(r["test"])


def test_torchrun_two_processes_match_one(tiny_zoo, tmp_path):
    """`scalegmn train` under torchrun (2 CPU processes, gloo) gives the single-process run."""
    cfg = _small(tiny_zoo, epochs=2, batch_size=8, gmn=ScaleGMNConfig(d_hidden=8, n_layers=1, d_out=10))
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    one = train_run(cfg, out=tmp_path / "one", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "scalegmn.tasks.cli", "train", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "two"),
           "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    np.testing.assert_allclose([h["loss"] for h in two["history"]], [h["loss"] for h in one["history"]],
                               rtol=1e-5)
    a, b = _state(tmp_path / "one"), _state(tmp_path / "two")
    for k in a:
        if k.startswith("model."):
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_a_cosine_schedule_without_its_length_is_refused(tiny_zoo):
    """A backend built without the run's length would decay to 0 right after the warm-up."""
    from scalegmn.tasks.run.backends.torch import TorchBackend
    from scalegmn.tasks.run.tasks import zoo_task
    from scalegmn.tasks.train import model_setup

    cfg = _small(tiny_zoo, lr_schedule="cosine")
    task = zoo_task(cfg)
    data = task.load()
    with pytest.raises(TrainError, match="total_steps"):
        TorchBackend(model_setup(cfg), task, data.n_params, 0, 1)
    TorchBackend(model_setup(cfg), task, data.n_params, 0, 1, total_steps=10)  # with it, it builds
