"""Unpair-Seg's config section (``unpairseg:`` in a preset), read when ``method: unpairseg``.

Defaults are the paper's and its released stage-1 config where they say (10 x 10 training grid, 20 x 20 test
grid, score 0.7, overlap 0.4, loss weights 2/1/1, 10 decoder layers, 256-d features, ConvNeXt-L); the choices
they leave open are fields here, and README.md (Unpair-Seg, Decisions) says which default we took and why.
This module imports nothing heavy: the shared config schema includes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("masks", "align")


@dataclass
class UnpairSegModelConfig:
    # The frozen vision-language model: "openclip:MODEL:TAG" (any open_clip model by name and pretrained tag, or
    # a weights file) or "checkpoint:PATH" (one of our GroupViT/MixReorg checkpoints: runs offline).
    backbone: str = "openclip:convnext_large_d_320:laion2b_s29b_b131k_ft_soup"
    # The training and prompt resolution (square): prompts and masks live in this frame.
    image_size: int = 1024
    # ViT backbones (open_clip ViTs, our GroupViT): the four block outputs read as the multi-scale features,
    # counted from 1; empty = evenly spaced over the depth, ending at the last.
    vit_layers: list[int] = field(default_factory=list)
    # Pixel decoder: an FPN over strides 4-32 with full self-attention layers on the stride-32 map
    # (the paper: 6 multi-scale deformable-attention layers, which need a compiled op).
    pixel_dim: int = 256
    encoder_layers: int = 1
    mask_dim: int = 256
    # Mask decoder: two-way attention layers between prompt tokens and pixel features.
    decoder_layers: int = 10
    heads: int = 8
    mlp_dim: int = 2048
    # Stage 2's multi-scale feature adapter: hidden width of its fusion block.
    adapter_dim: int = 256


@dataclass
class PromptConfig:
    # Training prompts: one jittered point per cell of a grid x grid grid, each taking the smallest
    # ground-truth mask under it as its target (points on no mask move into a random mask).
    grid: int = 10
    # Share of training prompts given as their target's box instead of a point.
    box_probability: float = 0.5
    # Scale jitter of the training images (the released config's 0.8-1.2), then a random crop or pad to the
    # training size and a horizontal flip.
    scale_range: list[float] = field(default_factory=lambda: [0.8, 1.2])


@dataclass
class MaskInferenceConfig:
    # Automatic masks: a grid x grid point grid, masks kept at predicted IoU >= score, then greedy
    # suppression of any mask overlapping a better one by IoU > overlap.
    grid: int = 20
    score: float = 0.7
    overlap: float = 0.4
    # Prompts per decoder pass (memory bound at inference).
    chunk: int = 100


@dataclass
class AlignConfig:
    # The stage-1 run folder or model folder the masks come from (its backbone and decoders are reused, frozen).
    masks_checkpoint: str = ""
    # Input scales (relative to the image size) at which masks are matched to entities; a pair is kept only when
    # every scale matches the mask to the same entity with at least ``confidence``.
    scales: list[float] = field(default_factory=lambda: [0.875, 1.0])
    # Confidence of a match: the softmax over the image's masks of the entity's similarities, at the match.
    confidence: float = 0.3
    # Point grid for the masks during stage 2 (the training grid: a step stays cheap).
    grid: int = 10
    # Entities are embedded in this template by the frozen text tower.
    entity_template: str = "a photo of a {}."
    # Shard field holding the caption: "txt", or the field `mixreorg data recaption` wrote (e.g. recaption.txt).
    caption_field: str = "txt"


@dataclass
class UnpairSegConfig:
    # "masks": stage 1, mask generation from image-mask pairs; "align": stage 2, the adapter from image-text pairs.
    stage: str = "masks"
    model: UnpairSegModelConfig = field(default_factory=UnpairSegModelConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    inference: MaskInferenceConfig = field(default_factory=MaskInferenceConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    mask_weight: float = 2.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
