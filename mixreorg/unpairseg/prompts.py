"""Visual prompts: the point grid, training prompts drawn from ground-truth masks, and the prompt encoder.

A prompt is a box (x1, y1, x2, y2) in pixels of the model's square input frame and a kind: a point is the box
(x, y, x, y) of kind POINT, a box is of kind BOX. One prompt asks for one mask.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixreorg.unpairseg.layers import FourierPositions

POINT, BOX = 0, 1


def point_grid(per_side: int, height: int, width: int) -> Tensor:
    """[per_side^2, 2] (x, y) cell centres of a per_side x per_side grid over a height x width image, row by row."""
    ys = (torch.arange(per_side, dtype=torch.float32) + 0.5) * height / per_side
    xs = (torch.arange(per_side, dtype=torch.float32) + 0.5) * width / per_side
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1).reshape(-1, 2)


def points_as_prompts(points: Tensor) -> tuple[Tensor, Tensor]:
    """[P, 2] points -> ([P, 4] boxes, [P] kinds)."""
    return torch.cat([points, points], dim=-1), torch.full((points.shape[0],), POINT, dtype=torch.long)


def sample_training_prompts(
    masks: np.ndarray, image_size: int, grid: int, box_probability: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompts for one image from its ground-truth ``masks`` [M, h, w] (coverage 0-1 at the mask resolution of an
    ``image_size`` px input): one point per cell of a grid x grid grid, uniformly placed in its cell, whose target
    is the smallest mask covering it (> half of its mask pixel); a point on no mask moves to a pixel of a random mask.
    With ``box_probability`` a prompt is its target's bounding box instead.

    Returns (boxes [P, 4] float32, kinds [P] int64, targets [P] int64) with P = grid^2.
    """
    count, height, width = masks.shape
    stride = image_size / width
    covered = masks > 0.5
    areas = covered.reshape(count, -1).sum(axis=1)
    if not areas.any():
        raise ValueError("no mask covers any pixel")
    cell = image_size / grid
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], axis=1) + rng.random((grid * grid, 2))
    points = (points * cell).astype(np.float32)
    rows = np.clip((points[:, 1] / stride).astype(int), 0, height - 1)
    cols = np.clip((points[:, 0] / stride).astype(int), 0, width - 1)
    under = covered[:, rows, cols]  # [M, P]
    candidates = np.where(under, areas[:, None], np.iinfo(np.int64).max)
    targets = candidates.argmin(axis=0)
    usable = np.flatnonzero(areas)
    for index in np.flatnonzero(~under.any(axis=0)):
        target = int(usable[rng.integers(len(usable))])
        pixel_rows, pixel_cols = np.nonzero(covered[target])
        pick = rng.integers(len(pixel_rows))
        points[index] = (np.array([pixel_cols[pick], pixel_rows[pick]]) + rng.random(2)) * stride
        targets[index] = target
    boxes = np.concatenate([points, points], axis=1)
    kinds = np.full(len(points), POINT, dtype=np.int64)
    as_box = rng.random(len(points)) < box_probability
    for index in np.flatnonzero(as_box):
        rows_in, cols_in = np.nonzero(covered[targets[index]])
        boxes[index] = np.array([cols_in.min(), rows_in.min(), cols_in.max() + 1, rows_in.max() + 1]) * stride
        kinds[index] = BOX
    return boxes.astype(np.float32), kinds, targets.astype(np.int64)


def sample_at(features: Tensor, coords: Tensor) -> Tensor:
    """[B, C, h, w] features read bilinearly at [B, P, 2] (x, y) in [0, 1] -> [B, P, C]."""
    grid = (2 * coords - 1).unsqueeze(2).to(features.dtype)  # [B, P, 1, 2]
    return F.grid_sample(features, grid, mode="bilinear", align_corners=False).squeeze(-1).transpose(1, 2)


class PromptEncoder(nn.Module):
    """Prompts -> one token and one position encoding each.

    A point's position is the encoding of its coordinates; a box's is the sum of its two corners' encodings, each
    with a learned corner embedding. The token adds a learned kind embedding and the mask features read at the
    prompt's centre (the released code's "content" embedding), so a prompt knows what it points at.
    """

    def __init__(self, dim: int, mask_dim: int) -> None:
        super().__init__()
        self.kind = nn.Embedding(2, dim)
        self.corner = nn.Embedding(2, dim)
        self.content = nn.Linear(mask_dim, dim)

    def forward(self, boxes: Tensor, kinds: Tensor, mask_features: Tensor, size: tuple[int, int],
                positions: FourierPositions) -> tuple[Tensor, Tensor]:
        """[B, P, 4] boxes in pixels of an image of ``size`` (height, width), [B, P] kinds, [B, C, h, w] mask
        features -> (tokens, position encodings), each [B, P, dim]."""
        height, width = size
        coords = boxes.float() / boxes.new_tensor([width, height, width, height], dtype=torch.float32)
        first, second = positions(coords[..., :2]), positions(coords[..., 2:])
        box_position = first + self.corner.weight[0] + second + self.corner.weight[1]
        position = torch.where((kinds == BOX).unsqueeze(-1), box_position, first)
        centre = 0.5 * (coords[..., :2] + coords[..., 2:])
        content = self.content(sample_at(mask_features, centre.clamp(0, 1)))
        return position + self.kind(kinds) + content, position
