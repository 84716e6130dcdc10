"""The configuration schema: one dataclass per concern, nested under ``Config``.

Defaults reproduce GroupViT's released model (spec sections 1-4); presets in
``presets/*.yaml`` change only what differs. Choices the papers leave open are
fields here, and README.md ("Decisions") says which default we picked and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mixreorg.unpairseg.config import UnpairSegConfig

# "mixreorg": GroupViT and MixReorg (the ``model`` section; mixing off or on). "unpairseg": Unpair-Seg (the
# ``unpairseg`` section; ``model`` then holds the architecture of a GroupViT/MixReorg backbone, if it has one).
METHODS = ("mixreorg", "unpairseg")


@dataclass
class VisionConfig:
    image_size: int = 224
    patch_size: int = 16
    # "patch": ViT's linear patch embedding (GroupViT, the official checkpoints); "conv": a convolutional stem
    # of the same stride (see model/patch_embed.py). Every preset uses "patch": the conv stem did not help the
    # tiny model learn shapes (benchmarks/results/shape_probe_cpu.md).
    stem: str = "patch"
    in_channels: int = 3
    width: int = 384
    heads: int = 6
    mlp_ratio: float = 4.0
    # Transformer blocks per stage; a stage with group tokens ends in a grouping block.
    depths: list[int] = field(default_factory=lambda: [6, 3, 3])
    num_group_tokens: list[int] = field(default_factory=lambda: [64, 8, 0])
    num_output_groups: list[int] = field(default_factory=lambda: [64, 8])
    # Hidden ratios of the grouping block's token-mixing MLP and channel MLP.
    assign_mlp_ratio: list[float] = field(default_factory=lambda: [0.5, 4.0])
    assign_eps: float = 1.0
    gumbel_tau: float = 1.0
    # GroupViT trains with gumbel straight-through hard assignment; false gives soft assignment.
    hard_assignment: bool = True
    drop_path_rate: float = 0.1
    # MixReorg's extra transformer layer before the mixing (0 for GroupViT).
    contextual_layers: int = 0
    layer_norm_eps: float = 1e-5


@dataclass
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 256
    heads: int = 4
    layers: int = 12
    mlp_ratio: float = 4.0
    # Optional initialisation from open_clip weights (model name + pretrained tag); never needed.
    init_from_open_clip: str = ""
    init_pretrained_tag: str = ""


@dataclass
class ProjectionConfig:
    embed_dim: int = 256
    hidden_dim: int = 4096
    # 2 = Linear -> BatchNorm -> ReLU -> Linear (GroupViT); 1 = a single Linear.
    num_layers: int = 2


@dataclass
class MixingConfig:
    enabled: bool = False
    # K: images whose patches are mixed together; the per-rank batch must be a multiple of it.
    group_size: int = 16
    # P: how many of the last stage-1 layers add the re-mixed original features to the mixed branch.
    progressive_layers: int = 6
    # output: Zm = T(Zm) + Mix(Zo)   input: Zm = T(Zm + Mix(Zo_prev))   average: (T(Zm) + Mix(Zo)) / 2
    progressive_mode: str = "output"
    # Group tokens of the restored branch: "original" (the original branch's stage-1 tokens) or "learned".
    restored_group_tokens: str = "original"
    # Attention maps used by the mixed segmentation loss: "soft" (softmax) or "hard" (gumbel straight-through).
    seg_attention: str = "soft"
    # Not in the paper, each a reading the paper allows (README, Decisions). Stop the gradient through
    # Mix(Z_o), the original features progressive mixing adds to the mixed branch:
    progressive_detach: bool = False
    # Stop the segmentation loss's gradient into the grouping assignments (it still trains the segment tokens).
    # On by default: with the gradient, the loss's optimum is one segment per source image, and tiny MixReorg
    # merges objects into their backgrounds (README, Decisions).
    seg_attention_detach: bool = True
    # Projector BatchNorm for the mixed segment tokens: "batch" (their own batch statistics) or "running"
    # (the running statistics inference normalises with).
    segment_norm: str = "batch"


@dataclass
class ModelConfig:
    name: str = "groupvit_vits16"
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = 100.0
    # GroupViT keeps a separate temperature for the multi-label loss.
    share_temperature: bool = False
    # Temperature of MixReorg's segmentation loss: "shared" (the contrastive one, which inference also uses)
    # or "own" (a third learned temperature, so the segmentation loss does not move inference's).
    segmentation_temperature: str = "shared"


@dataclass
class LossConfig:
    # Noun prompts per caption for the multi-label contrastive loss (0 disables it).
    multi_label: int = 3
    # Which prompts count as an image's positives in the multi-label loss: "own" (GroupViT: only the image's
    # own K prompts) or "same_word" (also other images' prompts of a word this image has; see the README).
    multi_label_positives: str = "own"
    contrastive_weight: float = 1.0
    multi_label_weight: float = 1.0
    segmentation_weight: float = 1.0
    restoration_weight: float = 1.0
    # Gather features with gradients across ranks (GroupViT does); false keeps each rank's graph local.
    gather_with_grad: bool = True
    # Captions the mixed segmentation loss classifies patches into: "global" (the whole batch across
    # ranks, so the loss does not depend on the number of GPUs), "local" (this rank's batch) or
    # "group" (only the K images mixed together).
    segmentation_texts: str = "global"


@dataclass
class DataConfig:
    train_data: str = ""
    train_num_samples: int = 0
    resampled: bool = False
    workers: int = 4
    shuffle_buffer: int = 10000
    # GroupViT's augmentation: RandomResizedCrop + flip + RandAugment + RandomErasing; "light" drops the last two.
    augmentation: str = "groupvit"
    crop_scale_min: float = 0.08
    # Stop the run when more than this fraction of the samples read were unusable (undecodable images,
    # samples missing from empty, short or unreadable shards); 1.0 never stops, 0.0 tolerates none.
    max_bad_fraction: float = 1.0


@dataclass
class TrainConfig:
    batch_size: int = 256
    accum_steps: int = 1
    epochs: int = 30
    warmup_epochs: float = 2.0
    # Learning rates at a global batch of 4096; scaled linearly with the global batch.
    base_lr: float = 1.6e-3
    warmup_lr: float = 4e-6
    min_lr: float = 4e-5
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    clip_grad: float = 5.0
    precision: str = "auto"
    grad_checkpointing: bool = False
    torch_compile: bool = False
    seed: int = 0
    max_steps: int = 0
    save_every: int = 1000
    keep_last: int = 3
    log_every: int = 10
    max_bad_steps: int = 5
    eval_every: int = 0
    eval_dataset: str = ""
    eval_data_root: str = ""


@dataclass
class Config:
    method: str = "mixreorg"
    model: ModelConfig = field(default_factory=ModelConfig)
    unpairseg: UnpairSegConfig = field(default_factory=UnpairSegConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
