"""The paper's experiments as presets: run configs shipped with the package, one YAML file each.

A preset holds the original implementation's hyperparameters for one experiment of the
paper's tables, as the run config keys that validate today (`RunConfig` for INR
classification and generalisation prediction, `EditConfig` for INR editing), and metadata
that is not run config:

- `description`: one line of what it runs;
- `data`: the data kind it needs and that loader's options (the folder comes from `--data`;
  `get_preset(name, data=PATH)` puts the data source into the run config);
- `paper`: `{metric, value, table}`, the number the paper reports;
- `original`: `{repo, config, parameters, ...}`, the configuration file it follows and the
  parameter count of the original model;
- `proposed`: model and loop options the original uses that do not exist here yet, recorded
  with a reason but not applied (keys in the dotted form `--set` takes);
- `notes`: what differs from the original and from the paper, and the size gap today.

```python
from scalegmn.tasks.presets import get_preset, list_presets, preset_info

list_presets()[:2]                      # ['inr-mnist-scalegmn', 'inr-mnist-scalegmn-b']
cfg = get_preset("inr-mnist-scalegmn", overrides=["epochs=1", "gmn.dropout=0.1"], data="/data/mnist-inrs")
cfg.gmn.d_hidden                        # 128
cfg.data.kind                           # 'dws'
```

On the command line: `scalegmn train --preset NAME --data PATH --set KEY=VALUE ...` (see
`scalegmn.tasks.resolve` for the precedence of preset, config file, `--data` and `--set`).

```python
preset_info("inr-mnist-scalegmn").paper.value  # 0.9657
```
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from scalegmn.tasks.data import DataConfig
    from scalegmn.tasks.editing import EditConfig
    from scalegmn.tasks.train import RunConfig

_EXPERIMENTS = (
    "inr-mnist", "inr-fmnist", "inr-cifar10", "inr-cifar10aug",
    "genpred-cifar10gs-relu", "genpred-cifar10gs-tanh", "genpred-cifar10gs-hetero",
    "genpred-svhngs-relu", "genpred-svhngs-tanh", "edit-mnist",
)
PRESET_NAMES = tuple(f"{e}-scalegmn{b}" for e in _EXPERIMENTS for b in ("", "-b"))
"""The preset names, in the order of the paper's tables (ScaleGMN, then ScaleGMN-B)."""

META_KEYS = ("description", "data", "paper", "original", "proposed", "notes")
"""The top-level keys of a preset file that are metadata, not run config."""

DATA_PLACEHOLDER = "<set by --data PATH>"
"""The data folder (`data.root`) of a preset's config until a data path is given (`get_preset(name, data=PATH)`)."""

SET_SHORTHANDS = {"zoo": "data: {kind: zoo, path: VALUE}", "images": "data.images (DWS MNIST INRs)"}
"""Keys `apply_overrides` takes beside the config's own: `zoo=PATH` and `images=FOLDER`."""

EDGE_WIDTH = {"dws": 1, "nfn_cifar": 1, "small_cnn_zoo": 9}
"""The edge feature width of each published data kind's graphs (INR MLPs: 1; 3x3 kernels: 9)."""

PRESET_DATA_KINDS = tuple(EDGE_WIDTH)
"""The data kinds a preset may need (the published data sets)."""


class PresetError(ValueError):
    """An unknown preset, a bad override, or a preset file that does not validate."""


class _Meta(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PaperResult(_Meta):
    """The number the paper reports for a preset's experiment (mean over 3 seeds).

    Attributes:
        metric: `"test_accuracy"` (a fraction), `"kendall_tau"` or `"test_mse"`.
        value: the paper's number, or None where it is not recorded here.
        table: the paper's table and column it appears in.
    """

    metric: Literal["test_accuracy", "kendall_tau", "test_mse"]
    value: float | None
    table: str = Field(min_length=1)


class OriginalConfig(_Meta):
    """The original implementation's configuration a preset follows.

    Attributes:
        repo: the repository (`owner/name`).
        config: the configuration file in it.
        commit: the commit read.
        parameters: the parameter count of the original's model for that configuration.
        parameters_unused: of those, parameters the original builds but its forward never
            calls (its full-graph readout holds an MLP `phi` that is never used); the
            preset's model matches `parameters - parameters_unused`.
        model: the original's model hyperparameters the count follows from.
    """

    repo: str
    config: str
    commit: str | None = None
    parameters: int = Field(ge=1)
    parameters_unused: int = Field(default=0, ge=0)
    model: dict[str, Any] = Field(default_factory=dict)


class ProposedOption(_Meta):
    """An option the original uses that does not exist here yet (recorded, not applied).

    Attributes:
        value: the value the preset would set.
        reason: one line of why.
    """

    value: Any
    reason: str = Field(min_length=1)


class PresetInfo(_Meta):
    """A preset's metadata: everything in its file but the run config.

    Attributes:
        name: the preset's name.
        task: `"classification"`, `"regression"` (generalisation prediction) or `"editing"`.
        description: one line of what it runs.
        data: the data kind (`kind`) and its loader's options, without the root.
        paper: the paper's number.
        original: the original configuration and its model's parameter count.
        proposed: dotted key -> option not in the config yet.
        notes: what differs from the original and from the paper.
    """

    name: str
    task: Literal["classification", "regression", "editing"]
    description: str = Field(min_length=1)
    data: dict[str, Any]
    paper: PaperResult
    original: OriginalConfig
    proposed: dict[str, ProposedOption] = Field(default_factory=dict)
    notes: str = ""

    @field_validator("data")
    @classmethod
    def _data(cls, v: dict[str, Any]) -> dict[str, Any]:
        from scalegmn.tasks.data import parse_data

        kind = v.get("kind")
        if kind not in PRESET_DATA_KINDS:
            raise ValueError(f"data.kind {kind!r}: a preset needs one of {', '.join(PRESET_DATA_KINDS)}")
        for k in ("root", "path"):
            if k in v:
                raise ValueError(f"data.{k}: the data folder comes from --data PATH, not from the preset; remove it")
        parse_data({**v, "root": "."})
        return v

    @property
    def data_kind(self) -> str:
        """The data kind the preset needs (`dws`, `nfn_cifar` or `small_cnn_zoo`)."""
        return str(self.data["kind"])

    def data_source(self, path: str | os.PathLike[str]) -> DataConfig:
        """The preset's data source for a data folder.

        Args:
            path: the folder holding the published data (`--data PATH`).

        Returns:
            The data source with the preset's options.

        Raises:
            DataSourceError: if the folder holds data of another kind, or is not a folder.
        """
        from scalegmn.tasks.data import detect_data

        options = {k: v for k, v in self.data.items() if k != "kind"}
        return detect_data(path, self.data_kind, **options)


def _unknown_name(name: str) -> PresetError:
    close = difflib.get_close_matches(name, PRESET_NAMES, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return PresetError(f"unknown preset {name!r}{hint} (`scalegmn presets` lists all {len(PRESET_NAMES)})")


def list_presets() -> list[str]:
    """The names of the shipped presets, in the order of the paper's tables.

    Returns:
        The 20 names, e.g. `inr-mnist-scalegmn`, `inr-mnist-scalegmn-b`, ..., `edit-mnist-scalegmn-b`.
    """
    return list(PRESET_NAMES)


def preset_text(name: str) -> str:
    """The YAML text of a preset, comments included.

    Args:
        name: a preset name (`list_presets()`).

    Raises:
        PresetError: for an unknown name, with the close matches.
    """
    if name not in PRESET_NAMES:
        raise _unknown_name(name)
    return resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")


@functools.cache
def _document(name: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(preset_text(name))
    except yaml.YAMLError as err:
        raise PresetError(f"preset {name}: its file is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise PresetError(f"preset {name}: its file holds {type(doc).__name__}, not a mapping")
    return doc


def preset_schema(name: str) -> type[RunConfig] | type[EditConfig]:
    """The run config class of a preset: `EditConfig` for INR editing, else `RunConfig`.

    Raises:
        PresetError: for an unknown name.
    """
    if name not in PRESET_NAMES:
        raise _unknown_name(name)
    from scalegmn.tasks.editing import EditConfig
    from scalegmn.tasks.train import RunConfig

    return EditConfig if name.startswith("edit-") else RunConfig


def load_preset_dict(name: str) -> dict[str, Any]:
    """The run config part of a preset as a plain mapping (a fresh copy; metadata left out).

    Args:
        name: a preset name.

    Returns:
        The keys of the run config the file sets (the class's defaults fill the rest).

    Raises:
        PresetError: for an unknown name.
    """
    return {k: copy.deepcopy(v) for k, v in _document(name).items() if k not in META_KEYS}


def preset_info(name: str) -> PresetInfo:
    """The metadata of a preset (data kind, paper number, original configuration, notes).

    Args:
        name: a preset name.

    Raises:
        PresetError: for an unknown name, or metadata that does not validate.
    """
    doc = _document(name)
    task = "editing" if name.startswith("edit-") else doc.get("task")
    meta = {k: copy.deepcopy(doc[k]) for k in META_KEYS if k in doc}
    try:
        return PresetInfo.model_validate({"name": name, "task": task, **meta})
    except ValidationError as err:
        raise PresetError(f"preset {name}: {_one_line(err)}") from None


def get_preset(
    name: str, overrides: Sequence[str] = (), data: str | os.PathLike[str] | None = None,
) -> RunConfig | EditConfig:
    """A preset's run config, validated, with its data folder and optional `KEY=VALUE` overrides.

    The data source is the preset's kind and loader options (`PresetInfo.data_source`) at
    `data`; without `data` its folder is `DATA_PLACEHOLDER` (enough to read the model and
    the loop settings; a run needs the folder).

    Args:
        name: a preset name (`list_presets()`).
        overrides: e.g. `["epochs=1", "gmn.dropout=0", "data.val_size=100"]` (see
            `apply_overrides`), applied after the data folder.
        data: the folder of the published data set the preset needs.

    Returns:
        `RunConfig` or `EditConfig`; its `gmn` is the model's `ScaleGMNConfig`.

    Raises:
        PresetError: for an unknown name (with the close matches) or a bad override.
        DataSourceError: `data` holds data of another kind than the preset's.

    Example:
        ```python
        from scalegmn.tasks.presets import get_preset

        get_preset("genpred-cifar10gs-relu-scalegmn", ["epochs=1"]).gmn.d_edge_in  # 9
        ```
    """
    schema = preset_schema(name)
    config = load_preset_dict(name)
    config["data"] = preset_data(name, data)
    config = apply_overrides(config, overrides, schema)
    return _validate(schema, config, f"preset {name}")  # type: ignore[no-any-return]


def preset_data(name: str, data: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A preset's data source as a config mapping: its kind and options, at `data` (or `DATA_PLACEHOLDER`).

    Raises:
        PresetError: for an unknown name.
        DataSourceError: `data` holds data of another kind than the preset's.
    """
    info = preset_info(name)
    if data is None:
        return {**info.data, "root": DATA_PLACEHOLDER}
    return info.data_source(data).model_dump(mode="json")


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        got = f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e["input"], Mapping) else ""
        parts.append(f"{loc}: {e['msg']}{got}" if loc else e["msg"])
    return "; ".join(parts)


def _validate(schema: type[BaseModel], config: Mapping[str, Any], what: str) -> Any:
    values = dict(config)
    if "data" in schema.model_fields and values.get("data") is None and "zoo" not in values:
        values["data"] = {"kind": "zoo", "path": DATA_PLACEHOLDER}
    try:
        return schema.model_validate(values)
    except ValidationError as err:
        raise PresetError(f"{what}: {_one_line(err)}") from None


def _nested_schema(schema: type[BaseModel] | None, key: str, node: Any = None) -> type[BaseModel] | None:
    if schema is None:
        return None
    if key == "data" and "data" in schema.model_fields:
        # a union on kind: the class of the kind the config holds
        from scalegmn.tasks.data import DATA_CLASSES

        return DATA_CLASSES.get(node.get("kind", "zoo")) if isinstance(node, Mapping) else None
    ann = schema.model_fields[key].annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _infer_schema(config: Mapping[str, Any]) -> type[BaseModel]:
    from scalegmn.tasks.editing import EditConfig
    from scalegmn.tasks.train import RunConfig

    edit_only = set(EditConfig.model_fields) - set(RunConfig.model_fields)
    return EditConfig if edit_only & set(config) else RunConfig


def apply_overrides(
    config: Mapping[str, Any], overrides: Sequence[str], schema: type[BaseModel] | None = None,
) -> dict[str, Any]:
    """A config mapping with `KEY=VALUE` overrides applied, then validated.

    Keys are dotted (`gmn.dropout`, `data.val_size`); values are parsed as YAML (`1`, `0.5`,
    `false`, `null`, `relu`). A key must be a field of the config class at its level
    (`schema` and its nested models; under `data` the fields of its kind); without a class
    it must be in `config` already. Two shorthands (`SET_SHORTHANDS`): `zoo=PATH` sets
    `data` to that zoo, `images=FOLDER` sets `data.images` (the MNIST idx files of INR
    editing on DWS MNIST INRs).

    Args:
        config: a run config mapping (e.g. `load_preset_dict(name)`); not modified.
        overrides: `KEY=VALUE` strings, applied in order.
        schema: the config class to check keys and validate against (default: `EditConfig`
            if `config` has a key only it takes, else `RunConfig`).

    Returns:
        A new mapping with the overrides set; it validates as `schema` (a missing `data` is
        taken as a zoo at `DATA_PLACEHOLDER`).

    Raises:
        PresetError: one line naming the override and the unknown key with the valid keys at
            its level, a malformed `KEY=VALUE`, or the field whose value does not validate.

    Example:
        ```python
        from scalegmn.tasks.presets import apply_overrides

        apply_overrides({"epochs": 200, "gmn": {"d_hidden": 128}}, ["epochs=1", "gmn.bidirectional=true"])
        # {'epochs': 1, 'gmn': {'d_hidden': 128, 'bidirectional': True}}
        ```
    """
    if schema is None:
        schema = _infer_schema(config)
    out = copy.deepcopy(dict(config))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PresetError(f"--set {item!r}: use KEY=VALUE, e.g. epochs=1 or gmn.dropout=0")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise PresetError(f"--set {item}: the value {raw!r} is not YAML; quote a string as '...'") from None
        if isinstance(value, str) and _EXPONENT.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if key == "zoo" and "data" in schema.model_fields:
            out.pop("zoo", None)
            out["data"] = {"kind": "zoo", "path": value}
            continue
        if key == "images" and "data" in schema.model_fields:
            data = out.get("data")
            if not isinstance(data, dict) or data.get("kind") != "dws":
                raise PresetError(f"--set {item}: images applies to DWS MNIST INRs (data of kind dws), the config's "
                                  f"data is {data.get('kind', 'a path') if isinstance(data, dict) else 'not set'}")
            key = "data.images"
        _set(out, key, value, schema, item)
    _validate(schema, out, f"--set {' '.join(overrides)}" if overrides else "config")
    return out


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _set(config: dict[str, Any], key: str, value: Any, schema: type[BaseModel] | None, item: str) -> None:
    parts = key.split(".")
    node, level, where = config, schema, "the config"
    for i, part in enumerate(parts):
        valid = sorted(level.model_fields) if level is not None else sorted(node)
        if part not in valid:
            close = difflib.get_close_matches(part, valid, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise PresetError(f"--set {item}: unknown key {part!r} in {where}{hint}; valid keys: {', '.join(valid)}")
        if i == len(parts) - 1:
            node[part] = value
            return
        child = node.get(part)
        sub = _nested_schema(level, part, child)
        if child is None and sub is not None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise PresetError(f"--set {item}: {'.'.join(parts[:i + 1])} is a value, not a section with keys")
        node, level, where = child, sub, ".".join(parts[:i + 1])


def preset_parameter_count(name: str, overrides: Sequence[str] = ()) -> int:
    """The parameters of a preset's model in PyTorch (built on the meta device, no memory).

    The model's node and edge feature widths are those of the preset's data kind
    (`EDGE_WIDTH`), as a run on that data builds it.

    Args:
        name: a preset name.
        overrides: `KEY=VALUE` overrides, as `get_preset` takes them.

    Returns:
        The number of learnable scalars of `scalegmn.torch.ScaleGMN(get_preset(name).gmn)`.
    """
    import torch

    from scalegmn.torch import ScaleGMN

    gmn = get_preset(name, list(overrides)).gmn
    gmn = gmn.model_copy(update={"d_node_in": 1, "d_edge_in": EDGE_WIDTH[preset_info(name).data_kind]})
    with torch.device("meta"):
        model = ScaleGMN(gmn)
    return sum(p.numel() for p in model.parameters())


def format_paper_value(paper: PaperResult) -> str:
    """The paper's number as the paper prints it (accuracy in %, MSE in units of 1e-2, Kendall's tau as is).

    Example:
        ```python
        from scalegmn.tasks.presets import PaperResult, format_paper_value

        format_paper_value(PaperResult(metric="test_accuracy", value=0.9657, table="..."))  # '96.57%'
        ```
    """
    if paper.value is None:
        return "-"
    if paper.metric == "test_accuracy":
        return f"{100 * paper.value:.2f}%"
    if paper.metric == "test_mse":
        return f"{100 * paper.value:.2f}e-2"
    return f"{paper.value:.3f}"


def preset_summary(name: str) -> dict[str, Any]:
    """One row of `scalegmn presets`: name, task, data kind, model, paper number, sizes.

    Returns:
        A JSON-ready mapping with `parameters` (today), `original` and their `ratio`.
    """
    info = preset_info(name)
    gmn = get_preset(name).gmn
    today = preset_parameter_count(name)
    model = f"{'ScaleGMN-B' if gmn.bidirectional else 'ScaleGMN'} {gmn.d_hidden}x{gmn.n_layers}"
    return {"name": name, "task": info.task, "data": info.data_kind, "model": model,
            "paper": format_paper_value(info.paper), "parameters": today,
            "original": info.original.parameters, "ratio": today / info.original.parameters}


__all__ = [
    "DATA_PLACEHOLDER", "EDGE_WIDTH", "META_KEYS", "PRESET_DATA_KINDS", "PRESET_NAMES", "SET_SHORTHANDS",
    "OriginalConfig", "PaperResult", "PresetError", "PresetInfo", "ProposedOption", "apply_overrides",
    "format_paper_value", "get_preset", "list_presets", "load_preset_dict", "preset_data", "preset_info",
    "preset_parameter_count", "preset_schema", "preset_summary", "preset_text",
]
