"""Stage 2's trainable part, and how a mask becomes a region embedding.

``MultiScaleAdapter``: the backbone's four levels, each projected and resized to the dense map's grid, summed, and
turned by a small conv block into a residual on the frozen dense features. Its last convolution starts at zero, so
before stage 2 the adapted features are CLIP's own. ``mask_pool``: a region's feature is the average of the dense
features inside its mask, each cell weighted by the share of it the mask covers (a mask smaller than one cell of a
coarse map still gets the cell it lies in).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mixreorg.unpairseg.layers import group_norm


class MultiScaleAdapter(nn.Module):
    def __init__(self, channels: list[int], dense_dim: int, hidden: int) -> None:
        super().__init__()
        self.inputs = nn.ModuleList(nn.Conv2d(c, hidden, 1) for c in channels)
        self.fuse = nn.Sequential(group_norm(hidden), nn.GELU(), nn.Conv2d(hidden, hidden, 3, padding=1),
                                  group_norm(hidden), nn.GELU())
        self.out = nn.Conv2d(hidden, dense_dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, levels: list[Tensor], dense: Tensor) -> Tensor:
        """The adapted dense features, [B, C_d, h, w] like ``dense``."""
        size = dense.shape[-2:]
        fused = sum(F.interpolate(conv(level), size=size, mode="bilinear", align_corners=False)
                    for conv, level in zip(self.inputs, levels, strict=True))
        return dense + self.out(self.fuse(fused))


def mask_pool(features: Tensor, masks: Tensor, eps: float = 1e-6) -> Tensor:
    """[B, C, h, w] features, [B, Q, H, W] masks (bool or 0-1) -> [B, Q, C] coverage-weighted averages."""
    weights = F.adaptive_avg_pool2d(masks.float(), features.shape[-2:]) if masks.shape[-2:] != features.shape[-2:] \
        else masks.float()
    total = weights.flatten(2).sum(-1, keepdim=True)  # [B, Q, 1]
    pooled = weights.flatten(2).to(features.dtype) @ features.flatten(2).transpose(1, 2)
    return pooled / total.clamp(min=eps).to(pooled.dtype)
