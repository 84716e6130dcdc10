"""Load presets and YAML files into typed ``Config`` objects, apply ``key=value`` overrides, save them back."""

from __future__ import annotations

import dataclasses
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mixreorg.config.schema import Config
from mixreorg.errors import MixreorgError

PRESET_PACKAGE = "mixreorg.config.presets"


def available_presets() -> list[str]:
    files = resources.files("mixreorg.config").joinpath("presets")
    return sorted(p.name[: -len(".yaml")] for p in files.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MixreorgError(f"{origin} is not valid YAML ({exc.__class__.__name__}); fix the file") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MixreorgError(f"{origin} must hold a mapping of config sections, got {type(data).__name__}")
    return data


def _preset_dict(name: str) -> dict[str, Any]:
    path = resources.files("mixreorg.config").joinpath("presets", f"{name}.yaml")
    if not path.is_file():
        raise MixreorgError(
            f"unknown preset '{name}'; expected one of: {', '.join(available_presets())} or a path to a .yaml file"
        )
    return _read_yaml(path.read_text(), f"preset '{name}'")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation, converting the lossless cases (int -> float)."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise MixreorgError(f"config key '{key}' expects a list like [1, 2], got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise MixreorgError(f"config key '{key}' expects true or false, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise MixreorgError(f"config key '{key}' expects a number, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise MixreorgError(f"config key '{key}' expects an integer, got {value!r}")
    if annotation is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise MixreorgError(f"config key '{key}' expects a string, got {value!r}")
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in hints:
            raise MixreorgError(f"unknown config key '{full}'; expected one of: {', '.join(names)}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise MixreorgError(f"config key '{full}' is a section; give it a mapping, not {value!r}")
            kwargs[key] = _build(annotation, value, f"{full}.")
        else:
            kwargs[key] = _coerce(value, annotation, full)
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _override_dict(override: str) -> dict[str, Any]:
    if "=" not in override:
        raise MixreorgError(f"override '{override}' must look like key=value, for example train.batch_size=64")
    key, raw = override.split("=", 1)
    key = key.strip()
    if not key:
        raise MixreorgError(f"override '{override}' has no key; write section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise MixreorgError(f"override '{override}': the value is not valid YAML") from exc
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def config_from_dict(data: dict[str, Any]) -> Config:
    return _build(Config, data, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Every field, except the sections the config's method does not use (GroupViT and MixReorg configs carry no
    ``unpairseg`` section, Unpair-Seg on an open_clip backbone no ``model`` section)."""
    data = dataclasses.asdict(config)
    if isinstance(config, Config) and config.method != "unpairseg":
        data.pop("unpairseg")
    elif isinstance(config, Config) and not config.unpairseg.model.backbone.startswith("checkpoint:"):
        data.pop("model")  # Unpair-Seg on an open_clip backbone has no GroupViT model section
    return data


def load_config(preset_or_path: str | Path = "groupvit_vits16", overrides: list[str] | None = None) -> Config:
    """A preset name or a YAML path (merged over the defaults), then ``key=value`` overrides in order.

    A YAML file may name ``base: PRESET`` to start from a preset instead of the defaults.
    """
    source = str(preset_or_path)
    if source.endswith((".yaml", ".yml")) or Path(source).is_file():
        path = Path(source)
        if not path.is_file():
            raise MixreorgError(f"config file {path} does not exist; pass a preset name or an existing .yaml")
        data = _read_yaml(path.read_text(), str(path))
        base = data.pop("base", None)
        if base:
            data = _deep_merge(_preset_dict(str(base)), data)
    else:
        data = _preset_dict(source)
    for override in overrides or []:
        data = _deep_merge(data, _override_dict(override))
    return config_from_dict(data)


def save_config(config: Config, path: str | Path) -> None:
    """Write the fully resolved config (every field) so a run can be reproduced from it alone."""
    from mixreorg.utils.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(config), sort_keys=False))
