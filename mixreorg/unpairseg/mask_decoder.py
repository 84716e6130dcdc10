"""The promptable mask decoder (the paper's Figure 5): prompt tokens and pixel features update each other.

A layer: self-attention among the prompts; cross-attention from the prompts to the pixels; an MLP on the prompts;
cross-attention from the pixels to the prompts (so the pixel features change too); positions are added to queries
and keys at every attention, and the original prompt embeddings (positions included) are added back to the prompts
after the layer. Layers take the pixel decoder's stride-8, 16 and 32 maps in turn, as Mask2Former's do. Heads: a
mask embedding per prompt dotted with stride-4 mask features (plus the updated stride-8 pixels, upsampled), and the
mask's predicted IoU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixreorg.unpairseg.layers import MLP, FourierPositions, flatten_map


class TwoWayLayer(nn.Module):
    """``update_pixels=False``: the layer leaves the pixels as they are (the last layer on a level no later layer
    or head reads: its pixel update could not reach the loss, and DDP refuses parameters without gradients)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, update_pixels: bool = True) -> None:
        super().__init__()
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.to_pixels = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.to_prompts = nn.MultiheadAttention(dim, heads, batch_first=True) if update_pixels else None
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4 if update_pixels else 3))

    def forward(self, prompts: Tensor, pixels: Tensor, prompt_pos: Tensor, pixel_pos: Tensor,
                original: Tensor) -> tuple[Tensor, Tensor]:
        """[B, P, C] prompts and [B, N, C] pixels (with their positions) -> both updated."""
        query = prompts + prompt_pos
        prompts = self.norms[0](prompts + self.self_attention(query, query, prompts, need_weights=False)[0])
        keys = pixels + pixel_pos
        attended = self.to_pixels(prompts + prompt_pos, keys, pixels, need_weights=False)[0]
        prompts = self.norms[1](prompts + attended)
        prompts = self.norms[2](prompts + self.mlp(prompts))
        if self.to_prompts is not None:
            attended = self.to_prompts(pixels + pixel_pos, prompts + prompt_pos, prompts, need_weights=False)[0]
            pixels = self.norms[3](pixels + attended)
        return prompts + original, pixels


class MaskDecoder(nn.Module):
    def __init__(self, dim: int, mask_dim: int, layers: int, heads: int, mlp_dim: int, levels: int = 3) -> None:
        super().__init__()
        # A layer's pixel update counts when a later layer reads its level again, or on the finest level (the mask
        # features take it).
        reread = [i + levels < layers or i % levels == 0 for i in range(layers)]
        self.layers = nn.ModuleList(TwoWayLayer(dim, heads, mlp_dim, update) for update in reread)
        self.level_embed = nn.Embedding(levels, dim)
        self.norm = nn.LayerNorm(dim)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)
        self.iou_head = MLP(dim, dim, 1, 3)
        self.refine = nn.Conv2d(dim, mask_dim, 1)

    def forward(self, prompts: Tensor, prompt_pos: Tensor, maps: list[Tensor], mask_features: Tensor,
                positions: FourierPositions) -> tuple[Tensor, Tensor]:
        """[B, P, C] prompt tokens and positions, the [stride 8, 16, 32] maps and [B, mask_dim, h, w] mask features
        -> (mask logits [B, P, h, w], IoU logits [B, P])."""
        pixels = [flatten_map(m) + self.level_embed.weight[i] for i, m in enumerate(maps)]
        pixel_pos = [positions.grid(*m.shape[-2:]).to(m.dtype) for m in maps]
        original = prompts
        for index, layer in enumerate(self.layers):
            level = index % len(maps)
            prompts, pixels[level] = layer(prompts, pixels[level], prompt_pos, pixel_pos[level], original)
        finest = pixels[0].transpose(1, 2).reshape(maps[0].shape)
        features = mask_features + F.interpolate(self.refine(finest), size=mask_features.shape[-2:], mode="bilinear",
                                                 align_corners=False)
        prompts = self.norm(prompts)
        masks = torch.einsum("bpc,bchw->bphw", self.mask_embed(prompts), features)
        return masks, self.iou_head(prompts).squeeze(-1)
