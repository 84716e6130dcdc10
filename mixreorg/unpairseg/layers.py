"""Small parts the decoders share: random Fourier position encodings, an MLP, GroupNorm of any width."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FourierPositions(nn.Module):
    """Positions in [0, 1]^2 -> ``dim`` features: sin and cos of a fixed random Gaussian projection (SAM's encoding).

    One instance encodes both pixel grids and prompt coordinates, so both live in one frame. The projection is a
    persistent buffer: checkpoints keep it.
    """

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"position features need an even width, got {dim}")
        self.register_buffer("projection", scale * torch.randn(2, dim // 2))

    def forward(self, coords: Tensor) -> Tensor:
        """[..., 2] (x, y) in [0, 1] -> [..., dim]."""
        angles = 2 * math.pi * (2 * coords.to(self.projection.dtype) - 1) @ self.projection
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def grid(self, height: int, width: int) -> Tensor:
        """[h * w, dim] for the centres of an h x w grid, row by row."""
        ys = (torch.arange(height, device=self.projection.device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=self.projection.device, dtype=torch.float32) + 0.5) / width
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return self(torch.stack([xx, yy], dim=-1).reshape(-1, 2))


class MLP(nn.Module):
    """``layers`` linear layers with ReLU between them."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, layers: int) -> None:
        super().__init__()
        widths = [dim_in] + [hidden] * (layers - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or as many as divide ``channels``."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def flatten_map(features: Tensor) -> Tensor:
    """[B, C, h, w] -> [B, h * w, C]."""
    return features.flatten(2).transpose(1, 2)
