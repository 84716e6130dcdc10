"""Dense zero-shot segmentation from the original branch: grouping maps x segment-text similarity."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mixreorg.model.mixreorg import MixReorgModel, combine_assignments


@dataclass
class DenseOutput:
    logits: Tensor  # [B, C, H, W] per-class scores at the input resolution
    attention: Tensor  # [B, S, H, W] soft pixel-to-segment maps (for visualisation)
    segment_logits: Tensor  # [B, S, C] scaled segment-to-class similarities


def upsample_assignment(assignment: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """[B, N, S] patch-to-segment maps -> [B, S, H, W], bilinear (align_corners=False) as in the official code."""
    batch, _, segments = assignment.shape
    maps = assignment.transpose(1, 2).reshape(batch, segments, grid[0], grid[1])
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def segment_attention(encoded, size: tuple[int, int]) -> Tensor:
    """[B, S, H, W] soft pixel-to-segment maps at ``size`` from an image-encoder output: the stages' soft
    assignments chained, then upsampled. The pixel's winning segment is their max over S."""
    return upsample_assignment(combine_assignments(encoded.assignments, "soft").float(), encoded.grid, size)


def _keep_top_classes(segment_logits: Tensor, image_logits: Tensor, top_k: int) -> Tensor:
    """GroupViT's filter: only the image's top-k classes may win a segment; re-weighted by the unfiltered softmax."""
    prior = segment_logits.softmax(dim=-1)
    k = min(top_k, segment_logits.shape[-1])
    keep = image_logits.topk(k, dim=-1).indices  # [B, k]
    mask = torch.full_like(segment_logits, float("-inf"))
    mask.scatter_(-1, keep.unsqueeze(1).expand(-1, segment_logits.shape[1], -1), 0.0)
    return (segment_logits + mask).softmax(dim=-1) * prior


@torch.no_grad()
def dense_logits(
    model: MixReorgModel, images: Tensor, class_embeddings: Tensor, mode: str = "groupvit", top_k: int = 5
) -> DenseOutput:
    """Per-class logits at image resolution for [B, 3, H, W] ``images`` and [C, D] normalised class embeddings.

    mode "groupvit" (the official evaluation): each pixel takes the segment with the largest soft
    assignment, and each segment's class scores are softmax-normalised with GroupViT's top-k filter.
    mode "soft": the soft maps times the scaled similarities, no filter (what transformers computes,
    there with the scale applied twice).
    """
    if mode not in ("groupvit", "soft"):
        raise ValueError(f"mode must be 'groupvit' or 'soft', got {mode!r}")
    # Under autocast (--precision bf16/fp16) only the encoder and projector run in low precision; the
    # similarities, softmaxes and maps below are computed in fp32.
    out = model.image_encoder(images)
    segments = model.segment_embeddings(out)
    image = model.image_projector(out.pooled) if mode == "groupvit" else None
    with torch.autocast(images.device.type, enabled=False):
        return _scores(model, out, segments, image, class_embeddings.float(), tuple(images.shape[-2:]), mode, top_k)


def _scores(model, out, segments: Tensor, image: Tensor | None, class_embeddings: Tensor, size: tuple[int, int],
            mode: str, top_k: int) -> DenseOutput:
    scale = model.temperature().float()
    segments = F.normalize(segments.float(), dim=-1)
    segment_logits = scale * segments @ class_embeddings.t()  # [B, S, C]
    attention = segment_attention(out, size)
    if mode == "soft":
        logits = torch.einsum("bshw,bsc->bchw", attention, segment_logits)
        return DenseOutput(logits=logits, attention=attention, segment_logits=segment_logits)
    image = F.normalize(image.float(), dim=-1)
    image_logits = (scale * image @ class_embeddings.t()).softmax(dim=-1)
    weights = _keep_top_classes(segment_logits, image_logits, top_k) if top_k > 0 else segment_logits.softmax(-1)
    return DenseOutput(logits=winning_segment(weights, attention), attention=attention, segment_logits=weights)


def winning_segment(per_segment: Tensor, attention: Tensor) -> Tensor:
    """[B, S, C] values per segment, [B, S, H, W] soft maps -> [B, C, H, W]: each pixel takes its winning segment's.

    A gather, not a one-hot [B, S, H, W] einsum. max().indices, not argmax(): the same first-index rule, but torch's
    CPU argmax over a non-innermost dim is about 10x slower (about 100 ms of a 448 px image's 280 ms went there).
    """
    winner = attention.max(dim=1).indices  # [B, H, W]
    batch = torch.arange(winner.shape[0], device=winner.device).view(-1, 1, 1)
    return per_segment[batch, winner].permute(0, 3, 1, 2)  # [B, H, W, C] -> [B, C, H, W]


@torch.no_grad()
def dense_cosines(model: MixReorgModel, images: Tensor, name_embeddings: Tensor) -> Tensor:
    """[B, Q, H, W] cosine similarity of each pixel's winning segment with each of the [Q, D] normalised names: what
    the sclip protocol's softmax readout takes, as a CLIP method's patch cosines."""
    out = model.image_encoder(images)
    segments = model.segment_embeddings(out)
    with torch.autocast(images.device.type, enabled=False):
        cosines = F.normalize(segments.float(), dim=-1) @ name_embeddings.float().t()  # [B, S, Q]
        return winning_segment(cosines, segment_attention(out, tuple(images.shape[-2:])))


def with_background(logits: Tensor, threshold: float, segment_scores: Tensor) -> Tensor:
    """Prepend a background channel: 1 where no class reaches min(threshold, the best segment score).

    The cap by the best score keeps at least the strongest segment as foreground (official behaviour).
    """
    best = segment_scores.flatten(1).max(dim=1).values.view(-1, 1, 1)
    cutoff = torch.minimum(torch.full_like(best, threshold), best)
    background = (logits.max(dim=1).values < cutoff).to(logits.dtype)
    return torch.cat([background.unsqueeze(1), logits], dim=1)
