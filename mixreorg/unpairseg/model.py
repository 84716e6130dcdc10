"""Unpair-Seg's model: a frozen vision-language backbone, the pixel decoder, the prompt encoder and mask decoder
(stage 1), and the multi-scale adapter (stage 2), with what inference and the stages need from them.

Which parts train is the stage's business (``set_stage``): stage 1 trains the decoders, stage 2 only the adapter;
the backbone never trains and always runs in eval mode and without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixreorg.config.schema import Config, ModelConfig
from mixreorg.errors import MixreorgError
from mixreorg.unpairseg.adapter import MultiScaleAdapter, mask_pool
from mixreorg.unpairseg.backbones import BackboneOutput, build_backbone
from mixreorg.unpairseg.config import STAGES, UnpairSegConfig
from mixreorg.unpairseg.layers import FourierPositions
from mixreorg.unpairseg.mask_decoder import MaskDecoder
from mixreorg.unpairseg.pixel_decoder import PixelDecoder
from mixreorg.unpairseg.prompts import PromptEncoder, point_grid, points_as_prompts


@dataclass
class Features:
    backbone: BackboneOutput
    mask_features: Tensor  # [B, mask_dim, H/4, W/4]
    maps: list[Tensor]  # the pixel decoder's stride 8, 16, 32 maps
    size: tuple[int, int]  # the input's (height, width)


@dataclass
class Masks:
    """One image's automatic masks, best first."""

    logits: Tensor  # [K, H/4, W/4] mask logits
    scores: Tensor  # [K] predicted IoU (0-1)


def suppress_overlaps(masks: Tensor, scores: Tensor, overlap: float) -> Tensor:
    """Greedy suppression: indices of [K, ...] boolean ``masks``, best score first, that overlap no better kept mask
    by an IoU above ``overlap``."""
    order = scores.argsort(descending=True, stable=True)
    flat = masks[order].flatten(1).float()
    inter = flat @ flat.t()
    area = flat.sum(-1)
    iou = (inter / (area[:, None] + area[None, :] - inter).clamp(min=1)).cpu().numpy()
    nonempty = (area > 0).cpu().numpy()
    kept: list[int] = []
    for index in range(len(order)):
        if nonempty[index] and (not kept or iou[index, kept].max() <= overlap):
            kept.append(index)
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]


class UnpairSegModel(nn.Module):
    def __init__(self, cfg: UnpairSegConfig, backbone: nn.Module, backbone_cfg: ModelConfig | None) -> None:
        super().__init__()
        self.cfg, self.backbone_cfg = cfg, backbone_cfg
        arch = cfg.model
        self.backbone = backbone
        self.positions = FourierPositions(arch.pixel_dim)
        self.pixel_decoder = PixelDecoder(backbone.channels, arch.pixel_dim, arch.mask_dim, arch.encoder_layers,
                                          arch.heads, arch.mlp_dim)
        self.prompt_encoder = PromptEncoder(arch.pixel_dim, arch.mask_dim)
        self.mask_decoder = MaskDecoder(arch.pixel_dim, arch.mask_dim, arch.decoder_layers, arch.heads, arch.mlp_dim)
        self.adapter = MultiScaleAdapter(backbone.channels, backbone.dense_dim, arch.adapter_dim)
        mean, std = backbone.pixel_stats()
        self.register_buffer("pixel_mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(3, 1, 1), persistent=False)
        self.set_stage(cfg.stage)

    # ---------------------------------------------------------------------------------------------- state
    def config_sections(self) -> dict:
        """What a checkpoint's config.yaml records of this model (``mixreorg.checkpoint.ours``)."""
        return {"method": "unpairseg", "unpairseg": self.cfg, "model": self.backbone_cfg or ModelConfig()}

    def set_stage(self, stage: str) -> None:
        if stage not in STAGES:
            raise MixreorgError(f"unpairseg.stage must be one of {', '.join(STAGES)}, got '{stage}'")
        self.cfg.stage = stage
        self.requires_grad_(False)
        trained = [self.adapter] if stage == "align" else [self.pixel_decoder, self.prompt_encoder, self.mask_decoder]
        for part in trained:
            part.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> UnpairSegModel:
        super().train(mode)
        for part in (self.backbone, self.pixel_decoder, self.prompt_encoder, self.mask_decoder, self.adapter):
            if not any(p.requires_grad for p in part.parameters()):
                part.eval()  # frozen parts always run as at inference
        return self

    def inference_backend(self):
        from mixreorg.unpairseg.backend import UnpairSegBackend

        return UnpairSegBackend(self)

    @property
    def image_size(self) -> int:
        return int(self.cfg.model.image_size)

    # ---------------------------------------------------------------------------------------------- parts
    def preprocess(self, pixels: Tensor) -> Tensor:
        """uint8 (or float 0-255) [B, 3, H, W] pixels -> the backbone's normalised input."""
        return (pixels.float() - self.pixel_mean) / self.pixel_std

    def features(self, images: Tensor) -> Features:
        """Backbone (no gradient) and pixel decoder on normalised [B, 3, H, W] images."""
        with torch.no_grad():
            out = self.backbone(images)
        mask_features, maps = self.pixel_decoder(out.levels)
        return Features(out, mask_features, maps, (images.shape[-2], images.shape[-1]))

    def predict_masks(self, feats: Features, boxes: Tensor, kinds: Tensor) -> tuple[Tensor, Tensor]:
        """[B, P, 4] prompt boxes (pixels of the input), [B, P] kinds -> (mask logits [B, P, H/4, W/4], IoU
        logits [B, P])."""
        tokens, positions = self.prompt_encoder(boxes, kinds, feats.mask_features, feats.size, self.positions)
        return self.mask_decoder(tokens, positions, feats.maps, feats.mask_features, self.positions)

    def dense(self, feats: Features, adapted: bool) -> Tensor:
        out = feats.backbone
        return self.adapter(out.levels, out.dense) if adapted else out.dense

    def region_embeddings(self, dense: Tensor, masks: Tensor) -> Tensor:
        """[B, C_d, h, w] dense features, [B, Q, H, W] masks (0-1) -> [B, Q, D] normalised region embeddings."""
        return F.normalize(self.backbone.embed_regions(mask_pool(dense, masks)).float(), dim=-1)

    def pixel_embeddings(self, dense: Tensor) -> Tensor:
        """[B, C_d, h, w] -> [B, D, h, w]: every cell as a region of its own (normalised)."""
        batch, _, height, width = dense.shape
        embedded = self.backbone.embed_regions(dense.flatten(2).transpose(1, 2))
        return F.normalize(embedded.float(), dim=-1).transpose(1, 2).reshape(batch, -1, height, width)

    def forward(self, task: str, images: Tensor, boxes: Tensor | None = None, kinds: Tensor | None = None,
                masks: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The trained path of a stage, as DDP must see it: ``task="masks"`` (stage 1) gives (mask logits, IoU
        logits) for the prompts; ``task="regions"`` (stage 2) gives (adapted region embeddings [B, Q, D] of
        ``masks`` [B, Q, H, W], the adapted dense map)."""
        if task == "masks":
            return self.predict_masks(self.features(images), boxes, kinds)
        if task != "regions":
            raise ValueError(f"task must be 'masks' or 'regions', got {task!r}")
        with torch.no_grad():
            out = self.backbone(images)
        adapted = self.adapter(out.levels, out.dense)
        return self.region_embeddings(adapted, masks), adapted

    # ---------------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def automatic_masks(self, feats: Features, grid: int, score: float, overlap: float, chunk: int) -> list[Masks]:
        """Masks of a grid x grid point grid, kept at predicted IoU >= ``score`` and without overlaps above
        ``overlap`` (best first), per image."""
        height, width = feats.size
        boxes, kinds = points_as_prompts(point_grid(grid, height, width).to(feats.mask_features.device))
        results = []
        for index in range(feats.mask_features.shape[0]):
            single = Features(BackboneOutput([lv[index:index + 1] for lv in feats.backbone.levels],
                                             feats.backbone.dense[index:index + 1]),
                              feats.mask_features[index:index + 1], [m[index:index + 1] for m in feats.maps],
                              feats.size)
            logits, ious = [], []
            for start in range(0, boxes.shape[0], chunk):
                part = slice(start, start + chunk)
                mask_logits, iou_logits = self.predict_masks(single, boxes[None, part], kinds[None, part])
                logits.append(mask_logits[0].float())
                ious.append(iou_logits[0].float().sigmoid())
            logits_all, scores = torch.cat(logits), torch.cat(ious)
            confident = scores >= score
            logits_all, scores = logits_all[confident], scores[confident]
            kept = suppress_overlaps(logits_all > 0, scores, overlap) if len(scores) else scores.long()
            results.append(Masks(logits_all[kept], scores[kept]))
        return results


def build_unpairseg(config: Config, initialize: bool = True) -> UnpairSegModel:
    """The model ``config`` describes. ``initialize``: stage 1 loads the backbone's pretrained weights (the decoders
    start random); stage 2 starts from its stage-1 checkpoint. Without it only the architecture is built, for a
    checkpoint's weights to fill."""
    section = config.unpairseg
    if initialize and section.stage == "align":
        from mixreorg.unpairseg.stages import load_stage_one

        model = load_stage_one(section.align.masks_checkpoint)
        model.cfg = section
        model.set_stage("align")
        return model
    arch = section.model
    backbone, backbone_cfg = build_backbone(arch.backbone, arch.vit_layers, pretrained=initialize,
                                            model_cfg=config.model)
    return UnpairSegModel(section, backbone, backbone_cfg)
