"""GroupViT's grouping block: group tokens claim image tokens and become segment tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixreorg.model.layers import CrossAttnBlock, MixerMlp, Mlp


@dataclass
class Assignment:
    """Token-to-group assignment of one grouping block, each [B, S_out, N]; every column sums to 1.

    ``hard`` is what the forward pass used (gumbel straight-through in training, argmax at inference);
    ``soft`` is the plain softmax over groups, which segmentation masks are built from.
    """

    hard: Tensor
    soft: Tensor


def straight_through_one_hot(probs: Tensor, dim: int) -> Tensor:
    """One-hot of the argmax in the forward pass, gradient of ``probs`` in the backward pass."""
    index = probs.max(dim=dim, keepdim=True).indices  # argmax's result; torch's CPU argmax over dim 1 is 5x slower
    hard = torch.zeros_like(probs).scatter_(dim, index, 1.0)
    return hard - probs.detach() + probs


def gumbel_hard_assign(logits: Tensor, dim: int, tau: float) -> Tensor:
    # Noise sampled in float32 even under autocast: exponential() in bf16 gives coarse, biased samples.
    gumbels = -torch.empty_like(logits, dtype=torch.float32).exponential_().log()
    probs = F.softmax((logits.float() + gumbels) / tau, dim=dim)
    return straight_through_one_hot(probs, dim)


class AssignAttention(nn.Module):
    """Single-head attention whose softmax runs over the groups (queries) instead of the keys."""

    def __init__(self, dim: int, hard: bool, gumbel_tau: float, assign_eps: float) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.hard = hard
        self.gumbel_tau = gumbel_tau
        self.assign_eps = assign_eps
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, groups: Tensor, tokens: Tensor) -> tuple[Tensor, Assignment]:
        logits = (self.q_proj(groups) @ self.k_proj(tokens).transpose(1, 2)).float() * self.scale
        soft = F.softmax(logits, dim=1)
        if self.hard and self.training:
            used = gumbel_hard_assign(logits, dim=1, tau=self.gumbel_tau)
        elif self.hard:
            used = straight_through_one_hot(soft, dim=1)
        else:
            used = soft
        # The +eps makes a group's output a shrunk mean, and an empty group's output zero.
        weights = used / (used.sum(dim=-1, keepdim=True) + self.assign_eps)
        out = self.proj(weights.to(tokens.dtype) @ self.v_proj(tokens))
        return out, Assignment(hard=used, soft=soft)


class GroupingBlock(nn.Module):
    """Turns N image tokens and S_in group tokens into S_out segment tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_group_tokens: int,
        num_output_groups: int,
        mlp_ratio: tuple[float, float],
        hard: bool,
        gumbel_tau: float,
        assign_eps: float,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        tokens_hidden, channels_hidden = int(mlp_ratio[0] * dim), int(mlp_ratio[1] * dim)
        self.norm_tokens = nn.LayerNorm(dim, eps=eps)
        self.mlp_inter = MixerMlp(num_group_tokens, tokens_hidden, num_output_groups)
        self.norm_post_tokens = nn.LayerNorm(dim, eps=eps)
        self.norm_x = nn.LayerNorm(dim, eps=eps)
        self.pre_assign_attn = CrossAttnBlock(dim, num_heads, mlp_ratio[1], eps=eps)
        self.assign = AssignAttention(dim, hard=hard, gumbel_tau=gumbel_tau, assign_eps=assign_eps)
        self.norm_new_x = nn.LayerNorm(dim, eps=eps)
        self.mlp_channels = Mlp(dim, channels_hidden)

    def forward(self, tokens: Tensor, group_tokens: Tensor) -> tuple[Tensor, Assignment]:
        group_tokens = self.norm_tokens(group_tokens)
        tokens = self.norm_x(tokens)
        projected = self.norm_post_tokens(self.mlp_inter(group_tokens))
        projected = self.pre_assign_attn(projected, tokens)
        out, assignment = self.assign(projected, tokens)
        segments = out + projected
        segments = segments + self.mlp_channels(self.norm_new_x(segments))
        return segments, assignment
