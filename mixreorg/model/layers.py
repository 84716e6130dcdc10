"""Transformer building blocks shared by the image encoder: MLPs, attention and pre-norm blocks.

Parameter names follow the official GroupViT release (``attn.qkv``, ``mlp.fc1``, ``norm1`` ...) so its
checkpoints map onto ours by prefix alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn


class Mlp(nn.Module):
    """Two linear layers with GELU (exact erf), applied along the channel axis."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MixerMlp(Mlp):
    """The same MLP applied along the token axis: maps S_in tokens to S_out tokens."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample during training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, on scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class CrossAttention(nn.Module):
    """Multi-head attention of queries over a separate key/value sequence (separate projections)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        return x.reshape(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        batch, length, dim = query.shape
        out = F.scaled_dot_product_attention(
            self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(key))
        )
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    """Pre-norm ViT block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttnBlock(nn.Module):
    """GroupViT's pre-assignment block: queries attend to (already normalised) keys, then post-norm.

    It exists only in the official code, not the paper, and the released weights need it.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_post = nn.LayerNorm(dim, eps=eps)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        x = query + self.attn(query, key)
        x = x + self.mlp(self.norm2(x))
        return self.norm_post(x)


def run_blocks(blocks: nn.ModuleList, x: Tensor, checkpointing: bool = False) -> Tensor:
    """Apply blocks in order, optionally recomputing activations in the backward pass to save memory."""
    for block in blocks:
        if checkpointing and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x
