"""`scalegmn train/edit --preset NAME --data PATH --set ...` end to end on data in each published layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from scalegmn.tasks.cli import app
from scalegmn.tasks.datasets import testing as fake
from scalegmn.tasks.resolve import resolve_config

# the model and loop at toy size: every preset's run finishes in seconds
TINY = ["epochs=1", "gmn.d_hidden=8", "gmn.n_layers=1", "gmn.mlp_hidden=8", "warmup_steps=1", "batch_size=4"]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    fake.write_dws_mnist(root / "mnist", n_train=8, n_test=3)
    fake.write_mnist_idx(root / "mnist-idx", n_train=8, n_test=3)
    fake.write_dws_splits_json(root / "fmnist", counts=(4, 2, 2))
    fake.write_nfn_cifar(root / "cifar", n=10, n_aug=1)
    fake.write_small_cnn_zoo(root / "cnn", n_runs=24)
    (root / "empty").mkdir()
    return {p.name: p for p in root.iterdir()}


def _ok(res) -> dict:  # type: ignore[no-untyped-def]
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _one_line_error(res) -> str:  # type: ignore[no-untyped-def]
    lines = [x for x in res.output.strip().splitlines() if not x.startswith("note:")]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def _train(preset: str, data: Path, out: Path, *sets: str, device: str = "cpu") -> dict:
    args = ["train", "--preset", preset, "--data", str(data), "--out", str(out), "--quiet", "--device", device]
    for s in (*TINY, *sets):
        args += ["--set", s]
    result = _ok(CliRunner().invoke(app, args))
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["root"] == str(data) and run["device"] == device  # run.json records the data source
    return result


CASES = [  # preset, folder, data kind, extra overrides, metric
    ("inr-mnist-scalegmn", "mnist", "dws", ["data.val_size=2", "max_train=4"], "accuracy"),
    ("inr-fmnist-scalegmn-b", "fmnist", "dws", ["max_train=3"], "accuracy"),
    ("inr-cifar10-scalegmn", "cifar", "nfn_cifar", ["data.split_points=[6, 8]", "max_train=4"], "accuracy"),
    ("genpred-cifar10gs-relu-scalegmn", "cnn", "small_cnn_zoo", ["max_train=6", "gmn.readout_hidden=8"],
     "kendall_tau"),
]


@pytest.mark.parametrize(("preset", "folder", "kind", "sets", "metric"), CASES, ids=[c[0] for c in CASES])
def test_a_preset_trains_on_data_in_its_published_layout(
    preset: str, folder: str, kind: str, sets: list[str], metric: str, published: dict[str, Path], tmp_path: Path,
) -> None:
    result = _train(preset, published[folder], tmp_path / "run", *sets)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["data"]["kind"] == kind and run["epochs"] == 1 and run["gmn"]["d_hidden"] == 8
    assert result["metric"] == metric and result["best_epoch"] == 0
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    limit = int(next(s for s in sets if s.startswith("max_train=")).split("=")[1])
    assert 1 <= result["n_train"] <= limit
    assert (tmp_path / "run" / "result.json").is_file()
    again = _ok(CliRunner().invoke(app, ["evaluate", str(tmp_path / "run"), "--split", "test"]))
    assert again[metric] == pytest.approx(result["test"], abs=1e-6)  # the best model, read back, on the same data


def test_the_preset_keeps_its_loader_options_and_the_paper_settings(published: dict[str, Path]) -> None:
    cfg = resolve_config("train", preset="inr-cifar10aug-scalegmn", data=published["cifar"], sets=["epochs=1"])
    assert cfg.data.kind == "nfn_cifar" and cfg.data.augmented  # type: ignore[union-attr]
    assert cfg.epochs == 1 and cfg.gmn.d_hidden > 8  # only what --set names changes


def test_precedence_preset_then_file_then_data_then_set(published: dict[str, Path], tmp_path: Path) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"epochs": 3, "lr": 0.005, "gmn": {"d_hidden": 16},
                                        "data": {"kind": "dws", "root": "/elsewhere", "val_size": 3}}))
    cfg = resolve_config("train", cfg_file, preset="inr-mnist-scalegmn", data=published["mnist"],
                         sets=["epochs=1"])
    assert cfg.epochs == 1  # --set over the file over the preset (200)
    assert cfg.lr == 0.005 and cfg.gmn.d_hidden == 16  # the file over the preset
    assert cfg.gmn.n_layers == 4 and cfg.batch_size == 128  # the preset where the file is silent
    assert cfg.data.root == published["mnist"] and cfg.data.val_size == 3  # type: ignore[union-attr]
    no_data = resolve_config("train", cfg_file, preset="inr-mnist-scalegmn")
    assert str(no_data.data.root) == "/elsewhere"  # type: ignore[union-attr]
    over = resolve_config("train", cfg_file, preset="inr-mnist-scalegmn", data=published["mnist"],
                          sets=["data.val_size=2"])
    assert over.data.val_size == 2  # type: ignore[union-attr]
    own = resolve_config("train", preset="inr-mnist-scalegmn", sets=["zoo=zoos/mine", "epochs=2"])
    assert own.data.kind == "zoo" and own.epochs == 2 and own.gmn.n_layers == 4  # a preset on a zoo built here
    zoo_file = tmp_path / "zoo.yaml"
    zoo_file.write_text(yaml.safe_dump({"zoo": "zoos/mine", "epochs": 3}))
    other = resolve_config("train", zoo_file, preset="inr-mnist-scalegmn", data=published["mnist"])
    assert other.data.kind == "dws" and other.data.val_size == 5000  # type: ignore[union-attr]


def test_data_without_a_kind_is_recognised(published: dict[str, Path], tmp_path: Path) -> None:
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"epochs": 1, "batch_size": 4, "warmup_steps": 1, "max_train": 6,
                                    "gmn": {"d_hidden": 8, "n_layers": 1, "d_out": 1, "d_edge_in": 9}}))
    res = CliRunner().invoke(app, ["train", str(cfg_file), "--data", str(published["cnn"]), "--quiet",
                                   "--device", "cpu", "--set", "data.activation=relu"])
    assert _ok(res)["metric"] == "kendall_tau"
    for folder, kind in (("mnist", "dws"), ("fmnist", "dws"), ("cifar", "nfn_cifar")):
        assert resolve_config("train", data=published[folder]).data.kind == kind


def test_editing_preset_on_dws_mnist_takes_the_mnist_images(published: dict[str, Path], tmp_path: Path) -> None:
    args = ["edit", "--preset", "edit-mnist-scalegmn", "--data", str(published["mnist"]), "--device", "cpu",
            "--no-progress"]
    for s in (*TINY, "data.val_size=2", "max_train=4", "max_eval=2"):
        args += ["--set", s]
    result = _ok(CliRunner().invoke(app, [*args, "--out", str(tmp_path / "e"),
                                          "--set", f"images={published['mnist-idx']}"]))
    assert result["target"] == "source" and result["n_train"] == 4 and result["n_val"] == 2
    assert result["config"]["data"]["images"] == str(published["mnist-idx"])
    assert (tmp_path / "e" / "editing.png").is_file()
    # the preset asks for the source images: without them, one line says how to give them or fall back
    line = _one_line_error(CliRunner().invoke(app, [*args, "--out", str(tmp_path / "e2")]))
    assert "images" in line and "target" in line and not (tmp_path / "e2" / "result.json").exists()
    with pytest.warns(UserWarning, match="no MNIST images"):
        fallback = _ok(CliRunner().invoke(app, [*args, "--out", str(tmp_path / "e3"), "--set", "target=auto"]))
    assert fallback["target"] == "render"


def test_editing_refuses_images_of_other_labels(published: dict[str, Path], tmp_path: Path) -> None:
    wrong = tmp_path / "idx"
    fake.write_mnist_idx(wrong, n_train=8, n_test=3, labels={(k, i): (i + 5) % 10 for k in ("training", "testing")
                                                              for i in range(8)})
    args = ["edit", "--preset", "edit-mnist-scalegmn", "--data", str(published["mnist"]), "--device", "cpu",
            "--out", str(tmp_path / "e"), "--set", "data.val_size=2", "--set", f"images={wrong}", *[
                x for s in TINY for x in ("--set", s)]]
    assert "label" in _one_line_error(CliRunner().invoke(app, args))


def test_cuda_without_a_gpu_is_refused_before_any_work(
    published: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cmd, preset in (("train", "inr-mnist-scalegmn"), ("edit", "edit-mnist-scalegmn")):
        out = tmp_path / cmd
        res = CliRunner().invoke(app, [cmd, "--preset", preset, "--data", str(published["mnist"]), "--device",
                                       "cuda", "--out", str(out), "--set", "epochs=1"])
        assert "no GPU" in _one_line_error(res) and not out.exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--preset", "inr-mnist-scalegm", "--data", "{mnist}"], ["unknown preset", "inr-mnist-scalegmn"]),
    (["--preset", "inr-mnist-scalegmn", "--data", "{empty}"], ["needs dws data", "nothing known"]),
    (["--data", "{empty}"], ["no known data layout", "mnist_png_*", "randinit_smaller_*", "weights.npy"]),
    (["--preset", "inr-mnist-scalegmn", "--data", "{mnist}", "--set", "epoch=1"],
     ["unknown key 'epoch'", "did you mean epochs"]),
    (["--preset", "inr-mnist-scalegmn", "--data", "{mnist}", "--set", "data.val_sise=2"],
     ["unknown key 'val_sise'", "val_size"]),
    (["--preset", "genpred-cifar10gs-relu-scalegmn", "--data", "{mnist}"],
     ["needs small_cnn_zoo data", "mnist_png_*"]),
    (["--preset", "edit-mnist-scalegmn", "--data", "{mnist}"], ["scalegmn edit --preset edit-mnist-scalegmn"]),
    (["--preset", "inr-mnist-scalegmn"], ["needs its data", "--data PATH"]),
    (["--preset", "inr-mnist-scalegmn", "--data", "{mnist}", "--device", "tpu"], ["--device 'tpu'"]),
])
def test_bad_input_is_one_line(args: list[str], expected: list[str], published: dict[str, Path],
                               tmp_path: Path) -> None:
    args = [a.format(**{k: str(v) for k, v in published.items()}) for a in args]
    line = _one_line_error(CliRunner().invoke(app, ["train", *args, "--out", str(tmp_path / "r")]))
    for part in expected:
        assert part in line, line
    assert not (tmp_path / "r").exists()


def test_a_run_folder_of_the_zoo_form_resumes(tiny_zoo: Path, tmp_path: Path) -> None:
    from scalegmn.tasks.train import RunConfig, TrainError, train_run

    cfg = RunConfig(zoo=str(tiny_zoo), epochs=1, batch_size=8, warmup_steps=1, threads=1, max_train=8,
                    gmn={"d_hidden": 8, "n_layers": 1, "d_out": 10})
    train_run(cfg, out=tmp_path / "r", progress=False)
    run_file = tmp_path / "r" / "run.json"
    stored = json.loads(run_file.read_text())
    assert stored["data"] == {"kind": "zoo", "path": str(tiny_zoo), "verify": "access"}
    old = {k: v for k, v in stored.items() if k != "data"}
    run_file.write_text(json.dumps({**old, "zoo": str(tiny_zoo)}))  # run.json as runs wrote it before data:
    assert train_run(cfg, out=tmp_path / "r", resume=True, progress=False)["best_epoch"] == 0
    run_file.write_text(json.dumps({**old, "zoo": str(tmp_path / "other")}))
    with pytest.raises(TrainError, match=r"differs .*\['data'\]"):
        train_run(cfg, out=tmp_path / "r", resume=True, progress=False)
