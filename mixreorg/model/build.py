"""Build a model from a config, a preset name or overrides."""

from __future__ import annotations

import torch

from mixreorg.config.loader import load_config
from mixreorg.config.schema import Config, ModelConfig
from mixreorg.errors import MixreorgError
from mixreorg.model.mixreorg import MixReorgModel


def validate_model_config(cfg: ModelConfig) -> None:
    """Reject configurations that would only fail deep inside the forward pass."""
    vision = cfg.vision
    if vision.width % vision.heads or cfg.text.width % cfg.text.heads:
        raise MixreorgError("model.vision.width and model.text.width must be divisible by their number of heads")
    if vision.image_size % vision.patch_size:
        raise MixreorgError("model.vision.image_size must be a multiple of model.vision.patch_size")
    if not (
        len(vision.depths) == len(vision.num_group_tokens) and len(vision.num_output_groups) >= len(vision.depths) - 1
    ):
        raise MixreorgError(
            "model.vision.depths and num_group_tokens need one entry per stage, "
            "num_output_groups one per grouping stage"
        )
    if vision.stem not in ("patch", "conv"):
        raise MixreorgError(f"model.vision.stem must be one of patch, conv, got '{vision.stem}'")
    if vision.stem == "conv" and (vision.patch_size < 2 or vision.patch_size & (vision.patch_size - 1)):
        raise MixreorgError(
            f"model.vision.stem=conv needs a power-of-two patch_size of 2 or more, got {vision.patch_size}"
        )
    if vision.num_group_tokens[0] <= 0:
        raise MixreorgError("model.vision.num_group_tokens[0] must be positive: the first stage must group")
    if cfg.segmentation_temperature not in ("shared", "own"):
        raise MixreorgError(
            f"model.segmentation_temperature must be one of shared, own, got '{cfg.segmentation_temperature}'"
        )
    mixing = cfg.mixing
    if mixing.enabled:
        if not 0 <= mixing.progressive_layers <= vision.depths[0]:
            raise MixreorgError(
                f"model.mixing.progressive_layers must be between 0 and the first stage depth ({vision.depths[0]})"
            )
        for key, value, allowed in (
            ("progressive_mode", mixing.progressive_mode, ("output", "input", "average")),
            ("restored_group_tokens", mixing.restored_group_tokens, ("original", "learned")),
            ("seg_attention", mixing.seg_attention, ("soft", "hard")),
            ("segment_norm", mixing.segment_norm, ("batch", "running")),
        ):
            if value not in allowed:
                raise MixreorgError(f"model.mixing.{key} must be one of {', '.join(allowed)}, got '{value}'")
        if mixing.group_size < 2:
            raise MixreorgError("model.mixing.group_size must be at least 2")


def build_model(
    config: Config | ModelConfig | str, overrides: list[str] | None = None, initialize: bool = True
) -> MixReorgModel:
    """The model for a config; ``initialize=False`` leaves the weights uninitialised for a checkpoint to fill.

    Skipping the random initialisation matters for loading: drawing 55M truncated-normal weights takes
    seconds on a CPU, reading them from safetensors milliseconds. The caller must then set every
    parameter and persistent buffer (a strict ``load_state_dict``).
    """
    if isinstance(config, str):
        config = load_config(config, overrides)
    model_cfg = config.model if isinstance(config, Config) else config
    validate_model_config(model_cfg)
    if initialize:
        return MixReorgModel(model_cfg)
    with torch.device("meta"):
        model = MixReorgModel(model_cfg)
    model.to_empty(device="cpu")
    # The causal text mask is a non-persistent buffer: no checkpoint carries it, so rebuild it here.
    model.text_encoder.attn_mask = model.text_encoder.build_causal_mask()
    return model
