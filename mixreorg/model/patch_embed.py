"""Patch embedding and position embeddings that follow the input size."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """Patches -> embedding -> LayerNorm. Returns tokens and the patch grid size.

    ``stem="patch"``: ViT's linear embedding of non-overlapping patches (GroupViT; what checkpoints hold).
    ``stem="conv"``: a stack of 3x3 stride-2 convolutions with the same total stride, then a 1x1 projection
    (Xiao et al. 2021, "Early convolutions help transformers see better"): the locality a ViT otherwise has
    to learn from data, which tiny models trained for minutes do not see enough of (on its own it does not make
    the tiny preset learn the synthetic shapes: benchmarks/results/shape_probe_cpu.md).
    """

    def __init__(self, patch_size: int, in_channels: int, dim: int, eps: float = 1e-5, stem: str = "patch") -> None:
        super().__init__()
        self.patch_size = patch_size
        if stem == "patch":
            self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        elif stem == "conv":
            self.proj = conv_stem(patch_size, in_channels, dim)
        else:
            raise ValueError(f"model.vision.stem must be patch or conv, got {stem!r}")
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(images)
        grid = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), grid


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, H, W] map, at every position."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def conv_stem(patch_size: int, in_channels: int, dim: int) -> nn.Sequential:
    """log2(patch_size) conv3x3/2 + LayerNorm + GELU layers, widening to ``dim`` at the last, then 1x1 to
    ``dim``. The norm is over channels at each position: a token depends only on its own neighbourhood, not on
    the rest of the image (GroupNorm), the batch or the rank (BatchNorm)."""
    steps = int(math.log2(patch_size))
    if 2**steps != patch_size or steps < 1:
        raise ValueError(f"a conv stem needs a power-of-two patch size, got {patch_size}")
    layers: list[nn.Module] = []
    channels = in_channels
    for step in range(steps):
        out = max(dim // 2 ** (steps - 1 - step), 8)
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), ChannelNorm(out), nn.GELU()]
        channels = out
    layers.append(nn.Conv2d(channels, dim, kernel_size=1))
    return nn.Sequential(*layers)


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
