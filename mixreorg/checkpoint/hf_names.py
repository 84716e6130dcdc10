"""Parameter names: ours <-> Hugging Face transformers' GroupViTModel (spec section 7.3).

One table serves both directions. ``{i}``/``{n}`` stand for stage and block indices; each template is a
prefix and the rest of the key (``weight``, ``bias`` ...) is carried over. Fused projections (our
``qkv`` Linear, open_clip's ``in_proj_*``) are split into HF's separate q/k/v projections and back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache

import torch
from torch import Tensor

from mixreorg.errors import MixreorgError

VISION_STAGE = "vision_model.encoder.stages.{i}"
TEXT_LAYER = "text_model.encoder.layers.{n}"
# Order matters: the first matching template wins, so specific ones come before the generic stage rule.
RENAMES = (
    ("logit_scale", "logit_scale"),
    ("image_encoder.pos_embed", "vision_model.embeddings.position_embeddings"),
    ("image_encoder.patch_embed.proj.", "vision_model.embeddings.patch_embeddings.projection."),
    ("image_encoder.patch_embed.norm.", "vision_model.embeddings.layernorm."),
    ("image_encoder.norm.", "vision_model.layernorm."),
    ("image_encoder.layers.{i}.blocks.{n}.norm1.", VISION_STAGE + ".layers.{n}.layer_norm1."),
    ("image_encoder.layers.{i}.blocks.{n}.norm2.", VISION_STAGE + ".layers.{n}.layer_norm2."),
    ("image_encoder.layers.{i}.blocks.{n}.attn.proj.", VISION_STAGE + ".layers.{n}.self_attn.out_proj."),
    ("image_encoder.layers.{i}.blocks.{n}.mlp.", VISION_STAGE + ".layers.{n}.mlp."),
    (
        "image_encoder.layers.{i}.downsample.pre_assign_attn.attn.proj.",
        VISION_STAGE + ".downsample.pre_assign_attn.attn.out_proj.",
    ),
    ("image_encoder.layers.{i}.", VISION_STAGE + "."),  # group_token, group_projector, the rest of downsample
    ("text_encoder.token_embedding.", "text_model.embeddings.token_embedding."),
    ("text_encoder.positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("text_encoder.transformer.resblocks.{n}.attn.out_proj.", TEXT_LAYER + ".self_attn.out_proj."),
    ("text_encoder.transformer.resblocks.{n}.ln_1.", TEXT_LAYER + ".layer_norm1."),
    ("text_encoder.transformer.resblocks.{n}.ln_2.", TEXT_LAYER + ".layer_norm2."),
    ("text_encoder.transformer.resblocks.{n}.mlp.c_fc.", TEXT_LAYER + ".mlp.fc1."),
    ("text_encoder.transformer.resblocks.{n}.mlp.c_proj.", TEXT_LAYER + ".mlp.fc2."),
    ("text_encoder.ln_final.", "text_model.final_layer_norm."),
    ("image_projector.linear_hidden.0.", "visual_projection.0."),
    ("image_projector.linear_hidden.1.", "visual_projection.1."),
    ("image_projector.linear_out.", "visual_projection.3."),
    ("text_projector.linear_hidden.0.", "text_projection.0."),
    ("text_projector.linear_hidden.1.", "text_projection.1."),
    ("text_projector.linear_out.", "text_projection.3."),
)
# Ours (one fused [3C, ...] tensor, q/k/v stacked in that order) -> HF ({p} = q, k or v).
FUSED = (
    ("image_encoder.layers.{i}.blocks.{n}.attn.qkv.", VISION_STAGE + ".layers.{n}.self_attn.{p}_proj."),
    ("text_encoder.transformer.resblocks.{n}.attn.in_proj_", TEXT_LAYER + ".self_attn.{p}_proj."),
)
# Buffers transformers may have saved that carry no weights.
HF_IGNORED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")
QKV = ("q", "k", "v")


@cache
def _regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, digits in (("i", r"\d+"), ("n", r"\d+"), ("p", "[qkv]")):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{digits})")
    return re.compile(pattern + "(?P<rest>.*)")


def _match(template: str, key: str) -> dict[str, str] | None:
    found = _regex(template).fullmatch(key)
    return found.groupdict() if found else None


# Temperatures only a training loss reads; inference uses ``logit_scale`` alone.
TRAINING_ONLY_TEMPERATURES = ("multi_label_logit_scale", "segmentation_logit_scale")


def ours_to_hf(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in TRAINING_ONLY_TEMPERATURES:
            continue  # transformers has neither the multi-label nor the mixed segmentation loss
        for ours, theirs in FUSED:
            if (groups := _match(ours, key)) is not None:
                rest = groups.pop("rest")
                for name, part in zip(QKV, value.chunk(3, dim=0), strict=True):
                    converted[theirs.format(p=name, **groups) + rest] = part.contiguous()
                break
        else:
            converted[_rename(key, RENAMES, 0, 1, "ours")] = value
    return converted


def hf_to_ours(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    converted: dict[str, Tensor] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key in HF_IGNORED:
            continue
        for ours, theirs in FUSED:
            if (groups := _match(theirs, key)) is not None:
                rest, name = groups.pop("rest"), groups.pop("p")
                pending.setdefault(ours.format(**groups) + rest, {})[name] = value
                break
        else:
            converted[_rename(key, RENAMES, 1, 0, "transformers")] = value
    for key, parts in pending.items():
        if set(parts) != set(QKV):
            raise MixreorgError(f"transformers checkpoint has only {sorted(parts)} parts of {key}; expected q, k and v")
        converted[key] = torch.cat([parts[name] for name in QKV], dim=0)
    return converted


def _rename(key: str, table: tuple, source: int, target: int, what: str) -> str:
    for row in table:
        if (groups := _match(row[source], key)) is not None:
            rest = groups.pop("rest")
            return row[target].format(**groups) + rest
    raise MixreorgError(f"unknown parameter '{key}' in the {what} checkpoint; expected a GroupViT model")
