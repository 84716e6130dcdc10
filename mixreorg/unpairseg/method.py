"""Unpair-Seg on the shared trainer (``mixreorg.training.methods.TrainingMethod``): its checks, model, loaders and
the loss of each stage.

Stage 1 (``masks``): the prompts' predicted masks against their ground-truth masks (BCE, dice, IoU prediction,
weighted 2/1/1). Stage 2 (``align``): pseudo-labels made without gradient (automatic masks; region embeddings of the
frozen dense features at every ``align.scales`` input scale; Hungarian matching to the caption's entities; the
pairs every scale agrees on with enough confidence), then the adapter's region embeddings of the kept masks trained
contrastively against the embeddings of the batch's distinct entities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixreorg.config.schema import Config
from mixreorg.errors import MixreorgError
from mixreorg.training.distributed import DistEnv
from mixreorg.unpairseg.config import STAGES

if TYPE_CHECKING:
    from mixreorg.training.trainer import Trainer


def check_unpairseg_config(cfg: Config) -> None:
    """Every Unpair-Seg setting in its valid range, before anything is built."""
    from mixreorg.unpairseg.backbones import check_backbone_name
    from mixreorg.unpairseg.stages import stage_one_config

    section = cfg.unpairseg
    arch, prompts, inference, align = section.model, section.prompts, section.inference, section.align
    if section.stage not in STAGES:
        raise MixreorgError(f"unpairseg.stage must be one of {', '.join(STAGES)}, got '{section.stage}'")
    if cfg.train.grad_checkpointing:
        raise MixreorgError("train.grad_checkpointing is for GroupViT/MixReorg; Unpair-Seg's backbone runs without "
                            "gradients and its decoders are small: set it to false")
    rules = [
        ("unpairseg.model.image_size", arch.image_size, arch.image_size >= 32 and arch.image_size % 32 == 0,
         "a multiple of 32"),
        ("unpairseg.model.heads", arch.heads, arch.heads >= 1 and arch.pixel_dim % arch.heads == 0,
         "at least 1 and a divisor of unpairseg.model.pixel_dim"),
        ("unpairseg.model.pixel_dim", arch.pixel_dim, arch.pixel_dim >= 2 and arch.pixel_dim % 2 == 0, "even"),
        ("unpairseg.model.decoder_layers", arch.decoder_layers, arch.decoder_layers >= 1, "at least 1"),
        ("unpairseg.prompts.grid", prompts.grid, prompts.grid >= 1, "at least 1"),
        ("unpairseg.prompts.box_probability", prompts.box_probability, 0 <= prompts.box_probability <= 1,
         "in [0, 1]"),
        ("unpairseg.prompts.scale_range", prompts.scale_range,
         len(prompts.scale_range) == 2 and 0 < prompts.scale_range[0] <= prompts.scale_range[1],
         "[low, high] with 0 < low <= high"),
        ("unpairseg.inference.grid", inference.grid, inference.grid >= 1, "at least 1"),
        ("unpairseg.inference.score", inference.score, 0 <= inference.score <= 1, "in [0, 1]"),
        ("unpairseg.inference.overlap", inference.overlap, 0 <= inference.overlap <= 1, "in [0, 1]"),
        ("unpairseg.align.scales", align.scales, bool(align.scales) and all(s > 0 for s in align.scales),
         "one or more positive numbers"),
        ("unpairseg.align.confidence", align.confidence, 0 <= align.confidence <= 1, "in [0, 1]"),
        ("unpairseg.align.grid", align.grid, align.grid >= 1, "at least 1"),
    ]
    for key, value, valid, expected in rules:
        if not valid:
            raise MixreorgError(f"{key} must be {expected}, got {value}")
    if "{}" not in align.entity_template:
        raise MixreorgError("unpairseg.align.entity_template needs a {} for the entity, got "
                            f"'{align.entity_template}'")
    if section.stage == "align":
        stage_one_config(align.masks_checkpoint)
    else:
        check_backbone_name(arch.backbone)


def gather_targets(masks: Tensor, targets: Tensor) -> Tensor:
    """[B, M, h, w] uint8 coverage, [B, P] indices -> [B, P, h, w] float targets in 0-1."""
    index = targets[:, :, None, None].expand(-1, -1, *masks.shape[-2:])
    return masks.gather(1, index).float() / 255.0


class UnpairSegMethod:
    name = "unpairseg"

    def __init__(self) -> None:
        self._entities: dict[str, Tensor] = {}  # entity -> its embedding (the text tower is frozen)

    def validate(self, cfg: Config) -> None:
        check_unpairseg_config(cfg)

    def build_model(self, cfg: Config) -> nn.Module:
        from mixreorg.unpairseg.model import build_unpairseg

        return build_unpairseg(cfg, initialize=True)

    def prepare(self, model: nn.Module, cfg: Config, distributed: bool) -> None:
        model.set_stage(cfg.unpairseg.stage)

    def build_loader(self, cfg: Config, data: str, env: DistEnv, epoch: int, start_batch: int = 0):
        from mixreorg.data.loader import build_train_loader
        from mixreorg.unpairseg.data import CaptionBatchStream, MaskBatchStream

        section = cfg.unpairseg
        if section.stage == "masks":
            prompts = section.prompts
            stream, options = MaskBatchStream, {"grid": prompts.grid, "box_probability": prompts.box_probability,
                                                "scale_range": tuple(prompts.scale_range)}
        else:
            stream, options = CaptionBatchStream, {"caption_field": section.align.caption_field}
        return build_train_loader(
            data, batch_size=cfg.train.batch_size, rank=env.rank, world_size=env.world_size, workers=cfg.data.workers,
            seed=cfg.train.seed, epoch=epoch, image_size=section.model.image_size, multi_label=0,
            augmentation=cfg.data.augmentation, crop_scale_min=cfg.data.crop_scale_min,
            shuffle_buffer=cfg.data.shuffle_buffer, resampled=cfg.data.resampled,
            num_samples=cfg.data.train_num_samples, start_batch=start_batch, stream=stream, options=options,
        )

    def losses(self, trainer: Trainer, batch: tuple, micro: int) -> dict[str, Tensor]:
        if trainer.cfg.unpairseg.stage == "masks":
            return self.mask_losses(trainer, batch)
        return self.align_losses(trainer, batch)

    # ---------------------------------------------------------------------------------------------- stage 1
    def mask_losses(self, trainer: Trainer, batch: tuple) -> dict[str, Tensor]:
        from mixreorg.unpairseg.losses import mask_iou, mask_losses

        section = trainer.cfg.unpairseg
        images, masks, boxes, kinds, targets = (part.to(trainer.device, non_blocking=True) for part in batch)
        mask_logits, iou_logits = trainer.forward("masks", trainer.model.preprocess(images), boxes, kinds)
        truth = gather_targets(masks, targets).flatten(0, 1)
        terms = mask_losses(mask_logits.flatten(0, 1), truth, iou_logits.flatten())
        weighted = {"mask_loss": section.mask_weight * terms["mask"], "dice_loss": section.dice_weight * terms["dice"],
                    "iou_loss": section.iou_weight * terms["iou"]}
        with torch.no_grad():
            weighted["mask_iou"] = mask_iou(mask_logits.flatten(0, 1).float(), truth).mean()
        return {"loss": sum(weighted[k] for k in ("mask_loss", "dice_loss", "iou_loss")), **weighted}

    # ---------------------------------------------------------------------------------------------- stage 2
    def entity_embeddings(self, model: nn.Module, entities: list[str], template: str) -> Tensor:
        """[E, D] normalised embeddings of ``entities`` in ``template``, each computed once per run, and alone: in a
        batch its value could depend on the other texts, and a resumed run must see the same numbers."""
        for entity in dict.fromkeys(entities):
            if entity not in self._entities:
                with torch.no_grad():
                    self._entities[entity] = F.normalize(model.backbone.encode_texts([template.format(entity)]),
                                                         dim=-1)[0]
        return torch.stack([self._entities[e] for e in entities])

    @torch.no_grad()
    def pseudo_labels(self, model: nn.Module, pixels: Tensor,
                      entities_per_image: list[list[str]]) -> list[list[tuple[Tensor, str]]]:
        """Per image, the (mask [h, w] 0/1, entity) pairs every scale agrees on."""
        from mixreorg.unpairseg.matching import agreeing_pairs

        section = model.cfg
        align, inference = section.align, section.inference
        feats = model.features(pixels)
        proposals = model.automatic_masks(feats, align.grid, inference.score, inference.overlap, inference.chunk)
        dense_per_scale = []
        for scale in align.scales:
            if scale == 1.0:
                dense_per_scale.append(feats.backbone.dense)
                continue
            side = max(16, 16 * round(pixels.shape[-1] * scale / 16))
            resized = F.interpolate(pixels, size=(side, side), mode="bilinear", align_corners=False)
            dense_per_scale.append(model.backbone(resized).dense)
        logit_scale = model.backbone.logit_scale()
        labels = []
        for index, (masks, entities) in enumerate(zip(proposals, entities_per_image, strict=True)):
            if not entities or not len(masks.scores):
                labels.append([])
                continue
            binary = (masks.logits > 0).float()[None]
            texts = self.entity_embeddings(model, entities, align.entity_template).to(binary.device)
            similarities = [(model.region_embeddings(dense[index:index + 1], binary)[0] @ texts.t()).cpu().numpy()
                            for dense in dense_per_scale]
            pairs = agreeing_pairs(similarities, logit_scale, align.confidence)
            labels.append([(binary[0, m], entities[e]) for m, e in pairs])
        return labels

    def align_losses(self, trainer: Trainer, batch: tuple) -> dict[str, Tensor]:
        from mixreorg.data.nouns import noun_phrases
        from mixreorg.unpairseg.losses import alignment_loss

        model = trainer.model
        images, captions = batch
        pixels = model.preprocess(images.to(trainer.device, non_blocking=True))
        entities = [noun_phrases(caption) for caption in captions]
        labels = self.pseudo_labels(model, pixels, entities)
        most = max(1, max(len(pairs) for pairs in labels))
        grid = pixels.shape[-1] // 4
        masks = torch.zeros(len(labels), most, grid, grid, device=trainer.device)
        valid = torch.zeros(len(labels), most, dtype=torch.bool, device=trainer.device)
        names: list[str] = []
        for row, pairs in enumerate(labels):
            for column, (mask, entity) in enumerate(pairs):
                masks[row, column], valid[row, column] = mask, True
                names.append(entity)
        regions, adapted = trainer.forward("regions", pixels, masks=masks)
        kept = len(names)
        if kept:
            distinct = list(dict.fromkeys(names))
            texts = self.entity_embeddings(model, distinct, model.cfg.align.entity_template).to(trainer.device)
            index = torch.tensor([distinct.index(n) for n in names], device=trainer.device)
            loss = alignment_loss(regions[valid], index, texts, model.backbone.logit_scale())
        else:  # nothing confident in this batch: a zero loss that still reaches every adapter weight (DDP needs it)
            loss = adapted.sum() * 0.0
        per_image = 1.0 / max(1, len(labels))
        return {"loss": loss, "align_loss": loss.detach(),
                "pairs_per_image": torch.tensor(kept * per_image, device=trainer.device),
                "entities_per_image": torch.tensor(sum(map(len, entities)) * per_image, device=trainer.device)}

