"""MixReorg's mixed-image segmentation loss (paper Eq. 4, reconstructed in spec 8.3)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mixreorg.losses.gather import gather_features, world


def mixed_segmentation_loss(
    segments: Tensor,
    assignment: Tensor,
    labels: Tensor,
    text: Tensor,
    scale: Tensor,
    group_size: int,
    text_set: str = "global",
    with_grad: bool = True,
) -> Tensor:
    """Cross-entropy of every mixed patch against the caption of the image it came from.

    segments [B, S, D] segment embeddings of the mixed images; assignment [B, N, S] patch-to-segment
    maps (product of both grouping stages); labels [B, N] source index in the local batch;
    text [B, D] caption embeddings. Patch logits = assignment @ (scale * segments @ captions^T).
    """
    segments = F.normalize(segments, dim=-1)
    text = F.normalize(text, dim=-1)
    if text_set == "group":
        batch, num_segments, dim = segments.shape
        groups = batch // group_size
        grouped_text = text.reshape(groups, group_size, dim)
        similarity = segments.reshape(groups, group_size * num_segments, dim) @ grouped_text.transpose(1, 2)
        similarity = similarity.reshape(batch, num_segments, group_size)
        labels = labels % group_size
    elif text_set == "local":
        similarity = segments @ text.t()
    elif text_set == "global":
        rank, _ = world()
        similarity = segments @ gather_features(text, with_grad).t()
        labels = labels + rank * text.shape[0]
    else:
        raise ValueError(f"loss.segmentation_texts must be global, local or group, got {text_set!r}")
    logits = assignment.to(similarity.dtype) @ (scale * similarity)  # [B, N, candidates]
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())
