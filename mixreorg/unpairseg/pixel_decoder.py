"""The pixel decoder: fuses the backbone's four levels into the maps the mask decoder reads.

The paper's is Mask2Former's: six multi-scale deformable-attention layers over strides 8-32, then an FPN to stride 4,
and deformable attention needs a compiled CUDA op (or a slow ``grid_sample`` loop). Ours is pure torch: full
self-attention layers on the stride-32 map (its few tokens make exact attention cheap), then a top-down FPN with
GroupNorm. Outputs: the stride-8, 16 and 32 maps for the decoder's attention, and stride-4 mask features.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mixreorg.unpairseg.layers import FourierPositions, flatten_map, group_norm


def _conv(channels_in: int, channels_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2, bias=False),
                         group_norm(channels_out))


class PixelDecoder(nn.Module):
    def __init__(self, channels: list[int], dim: int, mask_dim: int, encoder_layers: int, heads: int,
                 mlp_dim: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(_conv(c, dim, 1) for c in channels)
        self.positions = FourierPositions(dim)
        self.encoder = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=0.0, batch_first=True)
            for _ in range(encoder_layers)
        )
        self.output = nn.ModuleList(nn.Sequential(_conv(dim, dim, 3), nn.ReLU()) for _ in channels[:-1])
        self.mask_features = nn.Conv2d(dim, mask_dim, 1)

    def forward(self, levels: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Four maps (strides 4, 8, 16, 32) -> (mask features [B, mask_dim, H/4, W/4], [stride 8, 16, 32 maps])."""
        top = self.lateral[-1](levels[-1])
        batch, dim, height, width = top.shape
        tokens = flatten_map(top)
        if len(self.encoder):
            tokens = tokens + self.positions.grid(height, width).to(tokens.dtype)  # once, as a ViT adds them
        for layer in self.encoder:
            tokens = layer(tokens)
        outputs = [tokens.transpose(1, 2).reshape(batch, dim, height, width)]
        for index in range(len(levels) - 2, -1, -1):
            lateral = self.lateral[index](levels[index])
            above = F.interpolate(outputs[0], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outputs.insert(0, self.output[index](lateral + above))
        return self.mask_features(outputs[0]), outputs[1:]
