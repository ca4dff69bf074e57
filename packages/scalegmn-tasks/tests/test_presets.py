"""The paper's presets: names, validation, data kinds, model sizes, overrides and `scalegmn presets`."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from scalegmn.tasks.data import DataSourceError, open_split, parse_data, target_kind
from scalegmn.tasks.datasets import testing as fake
from scalegmn.tasks.editing import EditConfig
from scalegmn.tasks.presets import (
    DATA_PLACEHOLDER,
    EDGE_WIDTH,
    META_KEYS,
    PresetError,
    PresetInfo,
    apply_overrides,
    get_preset,
    list_presets,
    load_preset_dict,
    preset_info,
    preset_parameter_count,
    preset_schema,
    preset_summary,
    preset_text,
)
from scalegmn.tasks.train import RunConfig
from scalegmn.weightgraph import ScaleGMNConfig

NAMES = list_presets()
STEMS = ["inr-mnist", "inr-fmnist", "inr-cifar10", "inr-cifar10aug", "genpred-cifar10gs-relu",
         "genpred-cifar10gs-tanh", "genpred-cifar10gs-hetero", "genpred-svhngs-relu", "genpred-svhngs-tanh",
         "edit-mnist"]


def test_twenty_unique_names_in_the_published_naming() -> None:
    assert len(NAMES) == 20 and len(set(NAMES)) == 20
    assert set(NAMES) == {f"{s}-scalegmn{b}" for s in STEMS for b in ("", "-b")}
    shipped = {p.name[:-5] for p in resources.files("scalegmn.tasks.presets").iterdir() if p.name.endswith(".yaml")}
    assert shipped == set(NAMES), "every shipped YAML is a listed preset and every preset has its file"


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_validates_as_its_run_config(name: str) -> None:
    cfg = get_preset(name)
    schema = EditConfig if name.startswith("edit-") else RunConfig
    assert preset_schema(name) is schema and type(cfg) is schema
    assert isinstance(cfg.gmn, ScaleGMNConfig)
    doc = yaml.safe_load(preset_text(name))
    run_keys = set(doc) - set(META_KEYS)
    assert run_keys and run_keys <= set(schema.model_fields), "run config keys only, besides the metadata blocks"
    assert set(load_preset_dict(name)) == run_keys
    info = preset_info(name)
    assert isinstance(info, PresetInfo) and info.name == name
    assert info.original.parameters > 0 and info.description and info.notes
    assert all(p.reason for p in info.proposed.values())
    assert cfg.gmn.d_node_in == 1 and cfg.gmn.d_edge_in == EDGE_WIDTH[info.data_kind]
    assert cfg.data is not None and cfg.data.kind == info.data_kind and str(cfg.data.root) == DATA_PLACEHOLDER
    if isinstance(cfg, RunConfig):
        assert cfg.task == info.task == target_kind(parse_data({**info.data, "root": "."}))
        assert cfg.gmn.bidirectional == name.endswith("-b")
    else:
        assert info.task == "editing" and info.data_kind == "dws" and cfg.gmn.head == "equivariant"


@pytest.mark.parametrize("name", NAMES)
def test_proposed_options_do_not_validate_today(name: str) -> None:
    # The day an option exists, this fails: the preset must then set it instead of recording it.
    cfg = load_preset_dict(name)
    for key, opt in preset_info(name).proposed.items():
        with pytest.raises(PresetError):
            apply_overrides(cfg, [f"{key}={json.dumps(opt.value)}"], preset_schema(name))
            pytest.fail(f"{name}: proposed {key}={opt.value!r} validates today; move it into the run config")


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_builds_the_original_model_size(name: str) -> None:
    n = preset_parameter_count(name)
    orig = preset_info(name).original
    used = orig.parameters - orig.parameters_unused
    assert abs(n - used) <= 0.02 * used, (
        f"{name}: {n:,} parameters, {n / used:.4f} of the original's {used:,} (used of {orig.parameters:,})"
    )


def test_the_size_check_can_fail() -> None:
    # Negative control: the same preset without one of the original's pieces is off by more than 2 %.
    name = "inr-mnist-scalegmn"
    used = preset_info(name).original.parameters
    for override in ("gmn.io_mlps=0", 'gmn.sign_canon="symmetrize"', "gmn.d_hidden=120"):
        n = preset_parameter_count(name, [override])
        assert abs(n - used) > 0.02 * used, override


def test_the_notes_state_the_model_size() -> None:
    rows = []
    for name in NAMES:
        n = preset_parameter_count(name)
        info = preset_info(name)
        stated = re.search(r"model size: ([\d,]+) parameters", info.notes)
        assert stated is not None, f"{name}: the notes state no model size"
        assert int(stated.group(1).replace(",", "")) == n, f"{name}: the notes' model size is stale ({n:,} now)"
        rows.append((name, n, info.original.parameters - info.original.parameters_unused))
    print("\npreset  parameters  original (used)  ratio")
    for name, n, orig in rows:
        print(f"{name}  {n:,}  {orig:,}  {n / orig:.4f}")


def test_meta_device_count_equals_a_real_model() -> None:
    import torch

    from scalegmn.torch import ScaleGMN

    name = "inr-cifar10-scalegmn"
    real = sum(p.numel() for p in ScaleGMN(get_preset(name).gmn).parameters())
    assert preset_parameter_count(name) == real
    wider = sum(p.numel() for p in ScaleGMN(get_preset(name, ["gmn.d_hidden=65"]).gmn).parameters())
    assert wider != real  # the count sees the config
    assert torch.get_default_device().type == "cpu"  # the meta build left the default device alone


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    fake.write_dws_mnist(root / "mnist")
    fake.write_dws_splits_json(root / "fmnist")
    fake.write_nfn_cifar(root / "cifar", n_aug=20)
    fake.write_small_cnn_zoo(root / "cnn")
    return {"mnist": root / "mnist", "fmnist": root / "fmnist", "cifar": root / "cifar", "cnn": root / "cnn"}


def _folder(name: str, published: dict[str, Path]) -> Path:
    kind = preset_info(name).data_kind
    if kind == "dws":
        return published["fmnist" if "fmnist" in name else "mnist"]
    return published["cifar" if kind == "nfn_cifar" else "cnn"]


@pytest.mark.parametrize("name", NAMES)
def test_the_model_fits_data_in_the_published_layout(name: str, published: dict[str, Path]) -> None:
    src = preset_info(name).data_source(_folder(name, published))
    if getattr(src, "val_size", 0) > 8:
        src = src.model_copy(update={"val_size": 2})  # the fake MNIST folders hold 8 training INRs
    net = open_split(src, "train")[0][0]
    get_preset(name).gmn.check_compatible(net.spec)


def test_a_folder_of_another_kind_is_refused(published: dict[str, Path]) -> None:
    with pytest.raises(DataSourceError, match="does not look like small_cnn_zoo"):
        preset_info("genpred-cifar10gs-relu-scalegmn").data_source(published["mnist"])


def test_preset_metadata_is_checked() -> None:
    doc = yaml.safe_load(preset_text("inr-mnist-scalegmn"))
    meta = {k: doc[k] for k in META_KEYS if k in doc}  # proposed: is optional
    ok = {"name": "x", "task": "classification", **meta}
    PresetInfo.model_validate(ok)
    for data, why in (({**meta["data"], "root": "/d"}, "comes from --data"), ({"kind": "zoo"}, "needs one of"),
                      ({**meta["data"], "val_size": -1}, "val_size")):
        with pytest.raises(ValueError, match=why):
            PresetInfo.model_validate({**ok, "data": data})
    with pytest.raises(ValueError, match="reason"):
        PresetInfo.model_validate({**ok, "proposed": {"gmn.x": {"value": 1, "reason": ""}}})


@pytest.mark.parametrize("call", [get_preset, preset_info, preset_text, load_preset_dict])
def test_unknown_name_is_one_line_with_close_matches(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PresetError) as err:
        call("inr-mnst-scalegmn")
    msg = str(err.value)
    assert "\n" not in msg and "'inr-mnst-scalegmn'" in msg and "inr-mnist-scalegmn" in msg


def test_overrides_set_dotted_keys_with_yaml_values() -> None:
    base = load_preset_dict("inr-mnist-scalegmn")
    out = apply_overrides(base, ["epochs=1", "gmn.dropout=0", "gmn.bidirectional=false", "gmn.mlp_activation=relu",
                                 "max_train=5", "gmn.mlp_hidden=null", "lr=1e-4"])
    assert out["epochs"] == 1 and out["gmn"]["dropout"] == 0 and out["gmn"]["bidirectional"] is False
    assert out["gmn"]["mlp_activation"] == "relu" and out["max_train"] == 5 and out["gmn"]["mlp_hidden"] is None
    assert out["lr"] == pytest.approx(1e-4)
    assert base == load_preset_dict("inr-mnist-scalegmn"), "the input mapping is left unchanged"
    cfg = get_preset("inr-mnist-scalegmn", ["gmn.bidirectional=true", "epochs=1", "zoo=zoos/mnist"])
    assert cfg.gmn.bidirectional is True and cfg.epochs == 1 and cfg.zoo == "zoos/mnist"
    assert get_preset("inr-mnist-scalegmn").gmn.bidirectional is False  # no state kept between calls


def test_overrides_refuse_unknown_keys_naming_the_valid_ones() -> None:
    base = load_preset_dict("inr-mnist-scalegmn")
    with pytest.raises(PresetError) as err:
        apply_overrides(base, ["gmn.dropot=0"])
    msg = str(err.value)
    assert "\n" not in msg and "'dropot' in gmn" in msg and "did you mean dropout" in msg
    assert "valid keys: " in msg and "d_hidden" in msg and "epochs" not in msg  # the keys at that level
    with pytest.raises(PresetError, match=r"'epoch' in the config \(did you mean epochs\?\).*max_train"):
        apply_overrides(base, ["epoch=1"])
    with pytest.raises(PresetError, match="epochs is a value"):
        apply_overrides(base, ["epochs.x=1"])
    with pytest.raises(PresetError, match="use KEY=VALUE"):
        apply_overrides(base, ["epochs"])
    with pytest.raises(PresetError, match="target"):  # an editing key is no key of a RunConfig
        apply_overrides(base, ["target=render"])


def test_overrides_are_validated_naming_the_field() -> None:
    base = load_preset_dict("inr-mnist-scalegmn")
    with pytest.raises(PresetError) as err:
        apply_overrides(base, ["gmn.dropout=1.5"])
    assert "\n" not in str(err.value) and "gmn.dropout" in str(err.value) and "1.5" in str(err.value)
    with pytest.raises(PresetError, match="epochs"):
        apply_overrides(base, ["epochs=zero"])
    with pytest.raises(PresetError, match="head"):  # INR editing needs the equivariant head
        get_preset("edit-mnist-scalegmn", ["gmn.head=invariant"])


def test_overrides_infer_the_editing_config() -> None:
    base = load_preset_dict("edit-mnist-scalegmn")
    assert apply_overrides(base, ["target=render"])["target"] == "render"
    with pytest.raises(PresetError, match="target"):
        apply_overrides(base, ["target=sideways"])
    assert apply_overrides({"target": "auto"}, ["max_eval=2"])["max_eval"] == 2  # an editing key: EditConfig
    with pytest.raises(PresetError, match="'max_eval'"):
        apply_overrides({"epochs": 3}, ["max_eval=2"])  # no editing key: RunConfig, which lacks it


def _cli():  # type: ignore[no-untyped-def]
    from scalegmn.tasks.cli import app

    return app


def test_cli_lists_every_preset_with_sizes() -> None:
    runner = CliRunner()
    res = runner.invoke(_cli(), ["presets"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for name in NAMES:
        line = next((ln for ln in res.output.splitlines() if f" {name} " in ln), None)
        assert line is not None, f"{name} is not listed"
        s = preset_summary(name)
        assert f"{s['parameters']:,}" in line and f"{s['original']:,}" in line and f"{s['ratio']:.2f}" in line
    res = runner.invoke(_cli(), ["presets", "--json"])
    rows = [json.loads(ln) for ln in res.output.splitlines()]
    assert [r["name"] for r in rows] == NAMES
    assert all(r["ratio"] == pytest.approx(r["parameters"] / r["original"]) for r in rows)


def test_cli_shows_one_preset() -> None:
    runner = CliRunner()
    res = runner.invoke(_cli(), ["presets", "show", "genpred-svhngs-tanh-scalegmn"])
    assert res.exit_code == 0 and res.output == preset_text("genpred-svhngs-tanh-scalegmn")
    res = runner.invoke(_cli(), ["presets", "show", "edit-mnist-scalegmn", "--set", "epochs=1", "--set", "gmn.dropout=0"])
    assert res.exit_code == 0, res.output
    cfg = EditConfig.model_validate(yaml.safe_load(res.output))
    assert cfg.epochs == 1 and cfg.gmn.dropout == 0 and cfg.gmn.n_layers == 10
    res = runner.invoke(_cli(), ["presets", "show", "inr-mnst"])
    assert res.exit_code == 2 and "did you mean inr-mnist-scalegmn" in res.output
    res = runner.invoke(_cli(), ["presets", "show", "inr-mnist-scalegmn", "--set", "gmn.foo=1"])
    assert res.exit_code == 2 and "unknown key 'foo' in gmn" in res.output


@pytest.mark.parametrize("name", NAMES)
def test_the_run_config_follows_the_original_model(name: str) -> None:
    g, info = get_preset(name).gmn, preset_info(name)
    m, layout = info.original.model, info.original.model["layout"]
    assert (g.d_hidden, g.mlp_width, g.n_layers) == (m["d_hid"], m["d_hid"], m["num_layers"])
    assert g.bidirectional == (m["direction"] == "bidirectional") and g.symmetry == m["symmetry"]
    assert (g.layer_norm, g.skip_connections) == (m["ln"], m["skip"])
    assert (g.max_in_nodes, g.max_out_nodes, g.max_hidden_layers) == (layout[0], layout[-1], len(layout) - 2)
    assert g.d_edge_in == m.get("d_in_e", 1)
    assert (g.head == "equivariant") == m.get("equivariant", False)
    bid, sign_like = m["direction"] == "bidirectional", m["symmetry"] in ("sign", "hetero")
    if g.head == "invariant":
        # forward last_layer reads the output nodes; bidirectional last_layer projects the input
        # and the output nodes (io_nodes); full_graph reads the io nodes in their fixed order
        want = {"last_layer": "io_nodes" if bid else "last_layer", "full_graph": "full_graph"}[m["readout"]]
        assert (g.d_out, g.readout) == (m["d_out"], want)
        assert g.readout_io == ("ordered" if m["readout"] == "full_graph" else "sum")
    else:
        assert g.head_in_last_layer
    # the original's dropout sits between layers, and inside the MLPs too with dropout_all
    assert g.dropout == (m["dropout"] if m["dropout_all"] else 0.0)
    assert g.layer_dropout == m["dropout"]
    assert g.io_mlps == {2: 1, 3: 2}[m["num_mlps"]]
    assert g.skip_linear == m["skip"]
    if sign_like:
        assert g.sign_canon == ("symmetrize_phi" if m["sign_symm"] else "canonicalize")
    assert g.edge_inv == ("mlp" if sign_like and m["sign_symm"] else "canon")
    assert g.backward_edge_state == (bid and m["symmetry"] == "scale")
    assert g.positional_features == bool(m.get("pos_embed_msg") or m.get("pos_embed_upd"))
    assert g.per_group_inv == (m["symmetry"] == "hetero")
    assert g.edge_positional_encoding == m["edge_pe"]
    assert not info.proposed or all(not k.startswith("gmn.") for k in info.proposed), "every model option is set"
