"""Patch embedding and position embeddings that follow the input size."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> linear embedding -> LayerNorm. Returns tokens and the patch grid size."""

    def __init__(self, patch_size: int, in_channels: int, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(images)
        grid = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), grid


def resize_pos_embed(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bicubic resize of square learned position embeddings [1, N, C] to another patch grid.

    Unchanged when the grid already matches, so training at the native size costs nothing.
    """
    num_tokens = pos_embed.shape[1]
    side = int(math.isqrt(num_tokens))
    if grid == (side, side):
        return pos_embed
    dim = pos_embed.shape[2]
    square = pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)
