"""The full model: image and text encoders, projection heads, temperatures, and the training forward."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixreorg.config.schema import ModelConfig
from mixreorg.model.grouping import Assignment
from mixreorg.model.mixing import MixingPlan, sample_mixing_plan
from mixreorg.model.projector import ProjectMLP
from mixreorg.model.text_encoder import build_text_encoder, encode_tokens, init_text_from_open_clip
from mixreorg.model.vision_encoder import VisionEncoder, VisionOutput


@dataclass
class TrainOutputs:
    """Everything the losses need from one training forward (embeddings are not normalised)."""

    image: Tensor  # [B, D] original branch
    text: Tensor  # [B, D] captions
    prompts: Tensor | None  # [B, K_txt, D] noun prompts, None when the multi-label loss is off
    logit_scale: Tensor  # scalar, clamped exp(logit_scale)
    multi_label_logit_scale: Tensor  # scalar
    restored: Tensor | None = None  # [B, D] restored branch (MixReorg only)
    mixed_segments: Tensor | None = None  # [B, S, D] segment embeddings of the mixed images
    mixed_assignment: Tensor | None = None  # [B, N, S] patch-to-segment assignment of the mixed images
    mixed_labels: Tensor | None = None  # [B, N] source image of each mixed patch
    segmentation_logit_scale: Tensor | None = None  # scalar, the segmentation loss's temperature
    # Measurements logged beside the losses (no gradient): segments per image, cos(restored, original).
    diagnostics: dict[str, Tensor] = field(default_factory=dict)


def combine_assignments(assignments: list[Assignment], kind: str = "soft") -> Tensor:
    """[B, N, S_last]: product of every grouping stage's token-to-group maps (rows sum to 1)."""
    combined: Tensor | None = None
    for assignment in assignments:
        step = getattr(assignment, kind).transpose(1, 2)  # [B, N_in, S_out]
        combined = step if combined is None else combined @ step
    assert combined is not None, "the image encoder has no grouping stage"
    return combined


class MixReorgModel(nn.Module):
    """GroupViT when ``cfg.mixing.enabled`` is false, MixReorg when it is true. Inference is identical."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = VisionEncoder(cfg.vision)
        self.text_encoder = build_text_encoder(cfg.text)
        proj = cfg.projection
        self.image_projector = ProjectMLP(cfg.vision.width, proj.hidden_dim, proj.embed_dim, proj.num_layers)
        self.text_projector = ProjectMLP(cfg.text.width, proj.hidden_dim, proj.embed_dim, proj.num_layers)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.logit_scale_init))
        self.multi_label_logit_scale = (
            None if cfg.share_temperature else nn.Parameter(torch.tensor(cfg.logit_scale_init))
        )
        self.segmentation_logit_scale = (
            nn.Parameter(torch.tensor(cfg.logit_scale_init)) if cfg.segmentation_temperature == "own" else None
        )
        if cfg.text.init_from_open_clip and not self.logit_scale.is_meta:
            init_text_from_open_clip(self.text_encoder, cfg.text.init_from_open_clip, cfg.text.init_pretrained_tag)

    @property
    def context_length(self) -> int:
        return self.cfg.text.context_length

    def temperature(self, multi_label: bool = False, segmentation: bool = False) -> Tensor:
        """exp(logit_scale) clamped at ``logit_scale_max`` (100), as every GroupViT loss uses it; the
        multi-label and segmentation losses read their own temperature where the model has one."""
        param = self.logit_scale
        if multi_label and self.multi_label_logit_scale is not None:
            param = self.multi_label_logit_scale
        elif segmentation and self.segmentation_logit_scale is not None:
            param = self.segmentation_logit_scale
        return param.exp().clamp(max=self.cfg.logit_scale_max)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """[T, L] token ids -> [T, D] projected (unnormalised) text embeddings."""
        return self.text_projector(encode_tokens(self.text_encoder, tokens))

    def encode_image(self, images: Tensor) -> tuple[Tensor, VisionOutput]:
        """[B, 3, H, W] -> [B, D] projected image embeddings, plus the encoder's tokens and assignments."""
        out = self.image_encoder(images)
        return self.image_projector(out.pooled), out

    def segment_embeddings(self, out: VisionOutput) -> Tensor:
        """[B, S, D] projected embeddings of the final segment tokens."""
        return self.image_projector(out.tokens)

    def forward(
        self,
        images: Tensor,
        texts: Tensor,
        generator: torch.Generator | None = None,
        plan: MixingPlan | None = None,
    ) -> TrainOutputs:
        """Training forward. ``texts`` is [B, 1 + K_txt, L]: the caption, then K_txt noun prompts.

        MixReorg samples a mixing plan from ``generator`` unless ``plan`` is given (distributed training
        passes each rank its slice of one plan for the global batch, so results do not depend on the
        number of ranks).

        Captions and prompts go through the text tower in one batch, as GroupViT does, so the text
        projector's BatchNorm sees them together.
        """
        batch, per_sample, length = texts.shape
        text = self.encode_text(texts.reshape(batch * per_sample, length)).reshape(batch, per_sample, -1)
        prompts = text[:, 1:] if per_sample > 1 else None
        common = dict(
            text=text[:, 0],
            prompts=prompts,
            logit_scale=self.temperature(),
            multi_label_logit_scale=self.temperature(multi_label=True),
        )
        mixing = self.cfg.mixing
        if not mixing.enabled:
            image, encoded = self.encode_image(images)
            return TrainOutputs(image=image, diagnostics=training_diagnostics(encoded), **common)
        if plan is None:
            patch = self.cfg.vision.patch_size
            num_tokens = (images.shape[-2] // patch) * (images.shape[-1] // patch)
            plan = sample_mixing_plan(batch, num_tokens, mixing.group_size, images.device, generator)
        return self.forward_mixreorg(images, plan, common)

    def forward_mixreorg(self, images: Tensor, plan: MixingPlan, common: dict) -> TrainOutputs:
        mixing = self.cfg.mixing
        branches = self.image_encoder.forward_mixreorg(images, plan, mixing)
        # Only the original branch updates the projector's running statistics (what inference uses).
        image = self.image_projector(branches.original.pooled)
        restored = self.image_projector(branches.restored.pooled, update_stats=False)
        mixed_segments = self.image_projector(
            branches.mixed.tokens, update_stats=False, running_stats=mixing.segment_norm == "running"
        )
        assignment = combine_assignments(branches.mixed.assignments, mixing.seg_attention)
        if mixing.seg_attention_detach:
            assignment = assignment.detach()
        diagnostics = training_diagnostics(branches.original)
        with torch.no_grad():
            diagnostics["restored_cosine"] = F.cosine_similarity(restored.float(), image.float(), dim=-1).mean()
        return TrainOutputs(
            image=image,
            restored=restored,
            mixed_segments=mixed_segments,
            mixed_assignment=assignment,
            mixed_labels=plan.labels,
            segmentation_logit_scale=self.temperature(segmentation=True),
            diagnostics=diagnostics,
            **common,
        )


@torch.no_grad()
def training_diagnostics(encoded: VisionOutput) -> dict[str, Tensor]:
    """Segments per image of a training batch: final segments that win at least one patch (soft maps, as
    inference picks winners). Logged so a run shows its grouping collapse while it trains."""
    winners = combine_assignments(encoded.assignments, "soft").max(dim=-1).indices  # [B, N]
    used = torch.zeros(winners.shape[0], encoded.tokens.shape[1], device=winners.device)
    used.scatter_(1, winners, 1.0)
    return {"segments_per_image": used.sum(dim=1).mean()}
