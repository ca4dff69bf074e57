"""The run config of `scalegmn train` and `scalegmn edit` from a preset, a file, `--data` and `--set`.

Precedence, lowest first: the preset (`--preset NAME`), the config file, the data folder
(`--data PATH`), the overrides (`--set KEY=VALUE`, in order), then `--device` and
`--backend`. Sections (`gmn`) merge key by key; `data` is replaced as a whole, except that
`--data PATH` keeps the kind and options already chosen and only sets the folder.

```python
from scalegmn.tasks.resolve import resolve_config

cfg = resolve_config("train", preset="inr-mnist-scalegmn", data="/data/mnist-inrs",
                     sets=["epochs=1", "max_train=64"])
cfg.data.kind, cfg.epochs  # ('dws', 1)
```
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .data import KINDS, DataSourceError, _evidence, detect_data, zoo_shorthand
from .presets import apply_overrides, load_preset_dict, preset_info, preset_schema
from .run.config import TrainError, read_config_file, validation_line

if TYPE_CHECKING:
    from .editing import EditConfig
    from .run.config import RunConfig

Command = Literal["train", "edit"]


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`top` over `base`: nested mappings key by key, except `data` (a data source is one choice)."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        if k != "data" and isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _options(data: Any) -> tuple[str | None, dict[str, Any]]:
    """The kind and the options (all but the folder) of a config's `data` value."""
    if isinstance(data, Mapping) and data.get("kind") in KINDS:
        return str(data["kind"]), {k: v for k, v in data.items() if k not in ("kind", "root", "path")}
    return None, {}


def _data_for_preset(name: str, path: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's data source at `path`, refused unless the folder holds the preset's kind."""
    info = preset_info(name)
    kind = info.data_kind
    if not path.is_dir():
        raise DataSourceError(f"--data {path}: {'no such folder' if not path.exists() else 'not a folder'}")
    found, near = _evidence(path)
    if kind not in found:
        seen = "; ".join(f"{k}: {v}" for k, v in found.items()) or (
            f"nothing known{' (only ' + ', '.join(near) + ')' if near else ''}")
        raise DataSourceError(f"--data {path}: preset {name} needs {kind} data ({info.description}); the folder "
                              f"holds {seen}; give the folder of that data set")
    merged = {**{k: v for k, v in info.data.items() if k != "kind"}, **options}
    return detect_data(path, kind, **merged).model_dump(mode="json")


def resolve_config(
    command: Command,
    config: str | os.PathLike[str] | None = None,
    *,
    preset: str | None = None,
    data: str | os.PathLike[str] | None = None,
    sets: Sequence[str] = (),
    device: str | None = None,
    backend: str | None = None,
) -> RunConfig | EditConfig:
    """The validated config of a `scalegmn train` or `scalegmn edit` run.

    Args:
        command: `"train"` (a `RunConfig`) or `"edit"` (an `EditConfig`).
        config: a JSON or YAML config file.
        preset: a preset name (`scalegmn presets`); it must be of the command's task.
        data: the data folder; its kind is the preset's (checked against the folder's
            contents), else the config's `data.kind`, else recognised (`detect_kind`).
        sets: `KEY=VALUE` overrides (`apply_overrides`; `zoo=PATH`, `images=FOLDER` too).
        device: `auto`, `cpu`, `cuda` or `cuda:N`.
        backend: `torch` or `jax`.

    Returns:
        The run config.

    Raises:
        PresetError: an unknown preset (with close matches), a preset of the other command,
            or a bad `--set`.
        DataSourceError: a folder whose kind is unknown (the candidates named) or is not the
            preset's.
        TrainError: a bad config file, no data at all, or a config that does not validate.
    """
    from pydantic import ValidationError

    from .editing import EditConfig
    from .presets import PresetError
    from .run.config import RunConfig

    schema: type[RunConfig] | type[EditConfig] = EditConfig if command == "edit" else RunConfig
    raw: dict[str, Any] = {}
    if preset is not None:
        if preset_schema(preset) is not schema:
            other = "edit" if command == "train" else "train"
            raise PresetError(f"preset {preset} is {'an INR-editing' if other == 'edit' else 'a training'} preset; "
                              f"run it with scalegmn {other} --preset {preset}")
        raw = load_preset_dict(preset)
    if config is not None:
        raw = _merge(raw, zoo_shorthand(read_config_file(config)))
    if data is not None:
        kind, options = _options(raw.get("data"))
        if preset is not None:
            # the config file's options of the preset's kind refine the preset's; another kind's do not apply
            same = kind == preset_info(preset).data_kind
            raw["data"] = _data_for_preset(preset, Path(data), options if same else {})
        else:
            raw["data"] = detect_data(data, kind, **options).model_dump(mode="json")
    if sets and "gmn" not in raw:
        # `--set gmn.x=...` starts from the command's default model (editing's has the equivariant head)
        raw["gmn"] = schema().gmn.model_dump(mode="json") if command == "edit" else RunConfig.model_fields[
            "gmn"].get_default(call_default_factory=True).model_dump(mode="json")
    raw = apply_overrides(raw, sets, schema) if sets else raw
    if preset is not None and raw.get("data") is None:  # `--set zoo=PATH` may have given it
        info = preset_info(preset)
        raise TrainError(f"preset {preset} needs its data: --data PATH (a folder of {info.data_kind} data; "
                         f"{info.description})")
    for flag, key, value, choices in (("--device", "device", device, "auto, cpu, cuda or cuda:N"),
                                      ("--backend", "backend", backend, "torch or jax")):
        if value is None:
            continue
        try:
            schema.model_validate({**raw, key: value})
        except ValidationError as err:
            if any(e["loc"][:1] == (key,) for e in err.errors()):
                raise TrainError(f"{flag} {value!r}: use {choices}") from None
        raw[key] = value
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        if [e["loc"] for e in err.errors()] == [("data",)] and raw.get("data") is None:
            raise TrainError("no data: give --data PATH, a config file with data: (or zoo:), or --set zoo=PATH") from None
        where = f"{config}: " if config is not None else ""
        raise TrainError(f"{where}invalid {'editing' if command == 'edit' else 'run'} config: "
                         f"{validation_line(err)}") from None
