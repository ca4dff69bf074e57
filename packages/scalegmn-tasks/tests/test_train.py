"""Training runs on a tiny zoo: every model kind trains; bad configs are refused up front."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scalegmn.tasks.cli import app
from scalegmn.tasks.train import RunConfig, prepare_inputs, train_run
from scalegmn.tasks.zoo import build_inr_zoo
from scalegmn.weightgraph import ScaleGMNConfig


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "digits"
    build_inr_zoo(out, "digits", workers=1, count=48, steps=10, seed=0, progress=False,
                  val_fraction=0.25, test_fraction=0.25)
    return out


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
    with pytest.raises(ValueError, match="max_hidden_layers"):
        train_run(cfg, progress=False)
