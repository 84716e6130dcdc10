"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), the post-processing of TCL, SCLIP and NACLIP.

For every pixel i, its 8 neighbours j at each dilation d (3x3 ring, edges replicated) get an affinity from the image

    a_ij = -mean_c |I_c(i) - I_c(j)| / (1e-8 + 0.1 sigma_c(i)),    w_ij = softmax_j(a_ij) over all 8 x |dilations|,

where sigma_c(i) is the (unbiased) standard deviation of channel c over the 9 x |dilations| pixels of i's rings
(centre included); the scores are then averaged over the neighbours, ``steps`` times: m(i) <- sum_j w_ij m(j).
The weights depend on the image only, so they are computed once. Per-channel affine changes of the image (its
normalisation) cancel out. Neighbours are visited one shift at a time: memory stays a few times the score map,
not 8 x |dilations| times it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

RING = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]  # (row, column) steps, centre excluded
TCL_DILATIONS = (1, 2, 4, 8, 12, 24)  # kakaobrain/tcl apply_pamr
SCLIP_DILATIONS = (8, 16)  # wangf3014/SCLIP and sinahmr/NACLIP pamr_stride
PAMR_STEPS = 10


def _shifted(x: Tensor, padded: Tensor, dilation: int, step: tuple[int, int]) -> Tensor:
    """x's values at offset ``step * dilation`` ([..., H, W]), read from x padded by ``dilation`` (replicate)."""
    height, width = x.shape[-2:]
    top, left = dilation + step[0] * dilation, dilation + step[1] * dilation
    return padded[..., top : top + height, left : left + width]


def _pad(x: Tensor, dilation: int) -> Tensor:
    return F.pad(x.unsqueeze(0) if x.dim() == 3 else x, [dilation] * 4, mode="replicate").reshape(
        *x.shape[:-2], x.shape[-2] + 2 * dilation, x.shape[-1] + 2 * dilation)


def affinity_weights(image: Tensor, dilations: Sequence[int]) -> Tensor:
    """[3, H, W] image -> [8 * len(dilations), H, W] neighbour weights (softmax over the neighbours of a pixel)."""
    image = image.float()
    padded = {d: _pad(image, d) for d in dilations}
    neighbours = [_shifted(image, padded[d], d, step) for d in dilations for step in RING]
    samples = torch.stack([image] * len(dilations) + neighbours)  # the centre once per dilation, as the release does
    sigma = samples.std(dim=0)  # [3, H, W], unbiased
    affinity = torch.stack([(image - n).abs() for n in neighbours])  # [P, 3, H, W]
    affinity = -(affinity / (1e-8 + 0.1 * sigma)).mean(dim=1)
    return affinity.softmax(dim=0)


@torch.no_grad()
def pamr(image: Tensor, scores: Tensor, steps: int = PAMR_STEPS, dilations: Sequence[int] = SCLIP_DILATIONS) -> Tensor:
    """Refine [K, H, W] (or [N, K, H, W] with [N, 3, H, W] images) ``scores`` along the edges of ``image``."""
    if scores.dim() == 4:
        return torch.stack([pamr(i, s, steps, dilations) for i, s in zip(image, scores, strict=True)])
    if image.shape[-2:] != scores.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape[-2:])} and scores {tuple(scores.shape[-2:])} differ in size")
    weights = affinity_weights(image, dilations).to(scores.dtype)
    for _ in range(steps):
        refined = torch.zeros_like(scores)
        index = 0
        for d in dilations:
            padded = _pad(scores, d)
            for step in RING:
                refined += weights[index] * _shifted(scores, padded, d, step)
                index += 1
        scores = refined
    return scores


@torch.no_grad()
def refine_windows(crops: Tensor, scores: Tensor, steps: int = PAMR_STEPS,
                   dilations: Sequence[int] = TCL_DILATIONS) -> Tensor:
    """PAMR on each window's [N, K, h, w] scores at a quarter of the window's size, as TCL refines its masks
    (which it computes at a quarter of the input's size; the window is resized with align_corners=True, as there),
    then brought back to the window's size."""
    height, width = scores.shape[-2:]
    small = (max(1, height // 4), max(1, width // 4))
    coarse = F.interpolate(scores.float(), size=small, mode="bilinear", align_corners=False)
    image = F.interpolate(crops.float(), size=small, mode="bilinear", align_corners=True)
    refined = pamr(image, coarse, steps, dilations)
    return F.interpolate(refined, size=(height, width), mode="bilinear", align_corners=False).to(scores.dtype)
