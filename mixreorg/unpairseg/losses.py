"""Unpair-Seg's losses: stage 1's mask BCE + dice + IoU prediction, stage 2's region-entity contrastive loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_iou(logits: Tensor, targets: Tensor) -> Tensor:
    """[N, h, w] mask logits and 0-1 targets -> [N] IoU of the predicted (logit > 0) and true (> 0.5) masks; two
    empty masks agree perfectly (1)."""
    predicted, true = logits > 0, targets > 0.5
    intersection = (predicted & true).flatten(1).sum(-1).float()
    union = (predicted | true).flatten(1).sum(-1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def mask_losses(logits: Tensor, targets: Tensor, iou_logits: Tensor) -> dict[str, Tensor]:
    """Unweighted terms over N prompts: per-pixel BCE (mean over a mask's pixels, then over masks), dice loss
    1 - (2|p t| + 1) / (|p| + |t| + 1) with p = sigmoid(logits), and the squared error of the predicted IoU
    (sigmoid of ``iou_logits``) against the IoU the mask really has (no gradient through it)."""
    logits, targets = logits.float(), targets.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).mean(-1).mean()
    probs = logits.sigmoid().flatten(1)
    flat = targets.flatten(1)
    dice = (1 - (2 * (probs * flat).sum(-1) + 1) / (probs.sum(-1) + flat.sum(-1) + 1)).mean()
    iou = F.mse_loss(iou_logits.float().sigmoid(), mask_iou(logits.detach(), targets))
    return {"mask": bce, "dice": dice, "iou": iou}


def alignment_loss(regions: Tensor, entity_index: Tensor, entities: Tensor, logit_scale: float) -> Tensor:
    """Contrastive loss of [K, D] normalised region embeddings against the [E, D] normalised embeddings of the batch's
    distinct entities: cross-entropy of logit_scale x cosine, the target being the region's matched entity."""
    logits = logit_scale * regions.float() @ entities.float().t()
    return F.cross_entropy(logits, entity_index)
