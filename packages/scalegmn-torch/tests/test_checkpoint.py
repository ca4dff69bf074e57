"""Checkpoints: directory with config.json + model.safetensors, atomic, never unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch_testutil import OPTION_CASES, make_model, nets, small_config, spec_for

from scalegmn.torch import CheckpointError, ScaleGMN, collate, load_checkpoint, save_checkpoint
from scalegmn.weightgraph.checkpoint import CHECKSUM_FILE
from scalegmn.weightgraph.io import sha256_file


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cfg", [{}, {"bidirectional": True, "head": "equivariant"},
                                 {"readout": "last_layer", "layer_norm": True, "mlp_layers": 2},
                                 OPTION_CASES["all"], OPTION_CASES["all_edit"]])
def test_round_trip(tmp_path: Path, dtype: torch.dtype, cfg: dict) -> None:
    m = make_model(small_config(**cfg), dtype=dtype)
    path = save_checkpoint(m, tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["SHA256SUMS", "config.json", "model.safetensors"]
    back = load_checkpoint(path)
    assert back.config == m.config
    assert next(back.parameters()).dtype == dtype
    sd, sd2 = m.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    b = collate(nets(spec_for("mlp", "tanh"), 2), dtype)
    out, out2 = m(b), back.eval()(b)
    if isinstance(out, torch.Tensor):
        assert torch.equal(out, out2)
    else:
        assert torch.equal(out.edge_features, out2.edge_features)


def test_names_are_the_documented_ones(tmp_path: Path) -> None:
    m = ScaleGMN(small_config(bidirectional=True, n_layers=2))
    names = set(load_file(str(save_checkpoint(m, tmp_path / "c") / "model.safetensors")))
    for name in ["node_proj.weight", "edge_proj.weight", "pe_edge_hidden", "layers.0.fwd.rescale.a.weight",
                 "layers.1.bwd.msg.gamma.weight", "layers.1.bwd.msg.inv.lin.0.bias", "layers.0.upd.inv.lin.1.weight",
                 "layers.0.edge.mlp.lin.0.weight", "readout.inv.lin.0.weight", "readout.mlp.lin.1.bias"]:
        assert name in names
    # with an invariant head the last layer's edge states are never read: no edge module
    assert not any(n.startswith("layers.1.edge.") for n in names)
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert cfg["bidirectional"] is True


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint(ScaleGMN(small_config(d_out=2)), path)
    save_checkpoint(ScaleGMN(small_config(d_out=5)), path)
    assert load_checkpoint(path).config.d_out == 5
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def _resum(path: Path) -> None:
    """Refresh SHA256SUMS after editing a checkpoint, so the checks behind the checksum are reached."""
    (path / CHECKSUM_FILE).write_text(
        "".join(f"{sha256_file(path / n)}  {n}\n" for n in ("config.json", "model.safetensors")))


def test_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(tmp_path)
    path = save_checkpoint(ScaleGMN(small_config()), tmp_path / "c")
    tensors = load_file(str(path / "model.safetensors"))
    tensors.pop("node_proj.weight")
    save_file(tensors, str(path / "model.safetensors"))
    _resum(path)
    with pytest.raises(CheckpointError, match=r"node_proj\.weight"):
        load_checkpoint(path)
    tensors["node_proj.weight"] = torch.zeros(3, 3)
    save_file(tensors, str(path / "model.safetensors"))
    _resum(path)
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path)
    (path / "config.json").write_text("{not json")
    _resum(path)
    with pytest.raises(CheckpointError, match="invalid config"):
        load_checkpoint(path)
    with pytest.raises(TypeError, match="ScaleGMN"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "x")  # type: ignore[arg-type]


def test_loading_never_unpickles(tmp_path: Path) -> None:
    """A pickle placed where the weights should be is rejected, not executed."""
    path = save_checkpoint(ScaleGMN(small_config()), tmp_path / "c")
    torch.save({"x": torch.zeros(1)}, path / "model.safetensors")
    _resum(path)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)


def test_flipped_bytes_are_refused_by_the_checksum(tmp_path: Path) -> None:
    path = save_checkpoint(ScaleGMN(small_config()), tmp_path / "c")
    load_checkpoint(path)  # control: the untouched checkpoint loads
    w = path / "model.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-5] ^= 0xFF  # a parameter's byte: the file stays valid safetensors
    w.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: checksum mismatch"):
        load_checkpoint(path)


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda t: t.fill_(float("nan")), "NaN or infinite"),
    (lambda t: t.to(torch.int32), "dtype torch.int32"),
])
def test_nan_and_integer_parameters_are_refused(tmp_path: Path, edit, needle) -> None:
    path = save_checkpoint(ScaleGMN(small_config()), tmp_path / "c")
    tensors = load_file(str(path / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = edit(tensors[name].clone())
    save_file(tensors, str(path / "model.safetensors"))
    _resum(path)  # a consistent checksum: the values themselves are checked
    with pytest.raises(CheckpointError, match=f"parameter {name} .*{needle}") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_checkpoint_without_checksums_loads_with_a_warning(tmp_path: Path) -> None:
    path = save_checkpoint(ScaleGMN(small_config()), tmp_path / "c")
    (path / CHECKSUM_FILE).unlink()
    with pytest.warns(UserWarning, match="no SHA256SUMS"):
        load_checkpoint(path)
    (path / CHECKSUM_FILE).write_text("garbage\n")
    with pytest.raises(CheckpointError, match="malformed line"):
        load_checkpoint(path)
