"""Dense patch features of an open_clip VisionTransformer, its last block changed by a training-free method.

The forward mirrors open_clip's own (patch embedding, class token, positions, ``ln_pre``, the blocks, ``ln_post``,
``proj``), with two differences: the positional embedding is resampled when a window's patch grid differs from the
training grid, and the last block follows ``Method``. Every token keeps its projection into the joint space (open_clip
projects only the pooled token), so ``features[:, 1:]`` can be compared with text embeddings patch by patch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mixreorg.errors import MixreorgError
from mixreorg.training_free.methods import Method, attend


def resample_positions(positions: Tensor, grid: tuple[int, int]) -> Tensor:
    """[1 + N, D] learned positions -> [1 + h*w, D] for a grid of h x w patches, bicubic.

    As the SCLIP, ClearCLIP and NACLIP releases do it: the scale factor is (h + 0.1) / sqrt(N), not h / sqrt(N)
    (the 0.1 guards against rounding the output size down), without align_corners.
    """
    side = math.isqrt(positions.shape[0] - 1)
    if grid == (side, side):
        return positions
    if side * side != positions.shape[0] - 1:
        raise MixreorgError(f"this ViT's {positions.shape[0] - 1} positions are not a square grid; it cannot be run "
                            "on windows of another size")
    patches = positions[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    resized = F.interpolate(patches, scale_factor=((grid[0] + 0.1) / side, (grid[1] + 0.1) / side), mode="bicubic",
                            align_corners=False)
    resized = resized[..., : grid[0], : grid[1]].permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
    return torch.cat([positions[:1], resized.to(positions.dtype)])


def embed(visual, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """[B, 3, H, W] -> ([B, 1 + h*w, D] tokens after ``ln_pre``, (h, w)); open_clip's ``_embeds`` at any size."""
    x = visual.conv1(images)  # [B, D, h, w]
    grid = (x.shape[-2], x.shape[-1])
    if grid[0] == 0 or grid[1] == 0:
        raise MixreorgError(f"an image window of {images.shape[-2]}x{images.shape[-1]} px is smaller than one "
                            f"{visual.patch_size[0]} px patch; use larger images or a larger --size")
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + resample_positions(visual.positional_embedding, grid).to(x.dtype)
    return visual.ln_pre(x), grid


def _heads(attn, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[B, L, D] -> q, k, v as [B, heads, L, d] from an nn.MultiheadAttention or open_clip's Attention."""
    if getattr(attn, "logit_scale", None) is not None:
        raise MixreorgError("this ViT's last block uses scaled cosine attention, which the training-free methods do "
                            "not define; pick a standard CLIP ViT")
    if getattr(attn, "_qkv_same_embed_dim", True) is False:
        raise MixreorgError("this ViT's last block has separate key/value sizes; pick a standard CLIP ViT")
    batch, length, width = x.shape
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, length, attn.num_heads, -1).transpose(1, 2) for t in (q, k, v))
    if hasattr(attn, "ln_q"):  # open_clip's Attention: optional q/k LayerNorms (identity by default)
        q, k = attn.ln_q(q), attn.ln_k(k)
    return q, k, v


def _merge(attn, out: Tensor) -> Tensor:
    """[B, heads, L, d] -> [B, L, D] through the block's output projection (and open_clip's optional head scale
    and inner norm)."""
    if getattr(attn, "head_scale", None) is not None:
        out = out * attn.head_scale
    out = out.transpose(1, 2).flatten(2)
    if hasattr(attn, "ln_inner"):
        out = attn.ln_inner(out)
    return attn.out_proj(out)


def last_block(block, x: Tensor, method: Method, grid: tuple[int, int]) -> Tensor:
    """The last residual block of the tower under a changed ``method``; [B, L, D] batch-first tokens in and out."""
    q, k, v = _heads(block.attn, block.ln_1(x))
    branch = _merge(block.attn, attend(method, q, k, v, grid))
    branch = block.ls_1(getattr(block, "ln_attn", torch.nn.Identity())(branch))
    x = x + branch if method.residual else branch
    if method.ffn:
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x


def dense_features(visual, images: Tensor, method: Method) -> tuple[Tensor, tuple[int, int]]:
    """[B, 3, H, W] normalised images -> ([B, 1 + h*w, E] tokens in the joint image-text space, (h, w)).

    Token 0 is the class token; for method ``plain`` at the training size it is open_clip's image embedding.
    """
    x, grid = embed(visual, images)
    blocks = visual.transformer.resblocks
    # open_clip runs its blocks batch-first since 2.2x; older towers take [L, B, D]
    layout = (lambda t: t) if getattr(visual.transformer, "batch_first", True) else (lambda t: t.transpose(0, 1))
    x = layout(x)
    for block in blocks[:-1]:
        x = block(x)
    if method.name == "plain":
        x = layout(blocks[-1](x))
    else:
        x = last_block(blocks[-1], layout(x), method, grid)
    tokens = x if getattr(visual, "final_ln_after_pool", False) else visual.ln_post(x)
    if visual.proj is not None:
        tokens = tokens @ visual.proj
    return tokens, grid
