"""Read a model config off the tensor shapes of a state dict in our parameter names.

Shapes fix every size except attention heads (qkv is [3C, C] whatever the head count): those come
from the caller (the release's own config when readable), else from the base preset when the width
matches, else width // 64 as in GroupViT and CLIP.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping

from torch import Tensor

from mixreorg.config.schema import ModelConfig
from mixreorg.errors import MixreorgError


def _need(state: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise MixreorgError(f"the checkpoint lacks '{key}'; expected a GroupViT/MixReorg model state dict")
    return state[key]


def _indices(state: Mapping[str, Tensor], pattern: str) -> list[int]:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    return sorted(found)


def _heads(width: int, base_width: int, base_heads: int, given: int | None) -> int:
    if given:
        return given
    return base_heads if width == base_width else max(1, width // 64)


def infer_model_config(
    state: Mapping[str, Tensor], base: ModelConfig, vision_heads: int | None = None
) -> ModelConfig:
    """``base`` with every shape-determined field replaced by what ``state`` holds."""
    cfg = copy.deepcopy(base)
    vision, text, proj = cfg.vision, cfg.text, cfg.projection

    pos = _need(state, "image_encoder.pos_embed")
    patch = _need(state, "image_encoder.patch_embed.proj.weight")
    vision.width, vision.in_channels, vision.patch_size = patch.shape[0], patch.shape[1], patch.shape[-1]
    side = math.isqrt(pos.shape[1])
    if pos.ndim != 3 or side * side != pos.shape[1] or pos.shape[2] != vision.width:
        raise MixreorgError(
            f"image_encoder.pos_embed has shape {tuple(pos.shape)}; expected [1, side*side, {vision.width}]"
        )
    vision.image_size = side * vision.patch_size
    vision.heads = _heads(vision.width, base.vision.width, base.vision.heads, vision_heads)

    stages = _indices(state, r"image_encoder\.layers\.(\d+)\.")
    if not stages or stages != list(range(len(stages))):
        raise MixreorgError("the checkpoint has no image_encoder.layers.0...; expected a GroupViT image encoder")
    vision.depths = [len(_indices(state, rf"image_encoder\.layers\.{i}\.blocks\.(\d+)\.")) for i in stages]
    vision.num_group_tokens = [
        state[f"image_encoder.layers.{i}.group_token"].shape[1]
        if f"image_encoder.layers.{i}.group_token" in state
        else 0
        for i in stages
    ]
    grouping = [i for i in stages if vision.num_group_tokens[i] > 0]
    if not grouping:
        raise MixreorgError("the checkpoint's image encoder has no group tokens; expected a GroupViT image encoder")
    vision.num_output_groups = [
        _need(state, f"image_encoder.layers.{i}.downsample.mlp_inter.fc2.weight").shape[0]
        if vision.num_group_tokens[i]
        else 0
        for i in range(grouping[-1] + 1)
    ]
    fc1 = _need(state, "image_encoder.layers.0.blocks.0.mlp.fc1.weight")
    vision.mlp_ratio = fc1.shape[0] / vision.width
    first = f"image_encoder.layers.{grouping[0]}.downsample"
    vision.assign_mlp_ratio = [
        _need(state, f"{first}.mlp_inter.fc1.weight").shape[0] / vision.width,
        _need(state, f"{first}.mlp_channels.fc1.weight").shape[0] / vision.width,
    ]
    vision.contextual_layers = len(_indices(state, r"image_encoder\.contextual_blocks\.(\d+)\."))

    token = _need(state, "text_encoder.token_embedding.weight")
    text.vocab_size, text.width = token.shape
    text.context_length = _need(state, "text_encoder.positional_embedding").shape[0]
    text.layers = len(_indices(state, r"text_encoder\.transformer\.resblocks\.(\d+)\."))
    text.mlp_ratio = _need(state, "text_encoder.transformer.resblocks.0.mlp.c_fc.weight").shape[0] / text.width
    text.heads = _heads(text.width, base.text.width, base.text.heads, None)

    proj.embed_dim = _need(state, "image_projector.linear_out.weight").shape[0]
    if "image_projector.linear_hidden.0.weight" in state:
        proj.num_layers, proj.hidden_dim = 2, state["image_projector.linear_hidden.0.weight"].shape[0]
    else:
        proj.num_layers = 1
    # A release trained without the multi-label loss (GroupViT RedCaps, transformers) has one temperature.
    cfg.share_temperature = "multi_label_logit_scale" not in state
    cfg.segmentation_temperature = "own" if "segmentation_logit_scale" in state else "shared"
    return cfg
