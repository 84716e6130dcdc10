"""Typed configuration: dataclasses, YAML presets shipped in the package, and key=value overrides."""

from mixreorg.config.loader import (
    available_presets,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from mixreorg.config.schema import (
    Config,
    DataConfig,
    LossConfig,
    MixingConfig,
    ModelConfig,
    ProjectionConfig,
    TextConfig,
    TrainConfig,
    VisionConfig,
)

__all__ = [
    "Config",
    "DataConfig",
    "LossConfig",
    "MixingConfig",
    "ModelConfig",
    "ProjectionConfig",
    "TextConfig",
    "TrainConfig",
    "VisionConfig",
    "available_presets",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]
