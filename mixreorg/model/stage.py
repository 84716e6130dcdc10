"""One GroupViT stage: transformer blocks over [tokens ; group tokens], then an optional grouping block."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mixreorg.model.grouping import Assignment, GroupingBlock
from mixreorg.model.layers import Block, MixerMlp, run_blocks


class GroupingStage(nn.Module):
    """Stage i of the image encoder.

    Group tokens are appended at the end of the sequence. A stage after another stage with group
    tokens derives its own from them through ``group_projector`` (a token-axis MLP) on top of a
    zero-initialised learned token, as in the official release.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        drop_path: list[float],
        num_group_tokens: int,
        num_output_groups: int,
        prev_num_group_tokens: int,
        assign_mlp_ratio: tuple[float, float],
        hard: bool,
        gumbel_tau: float,
        assign_eps: float,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_group_tokens = num_group_tokens
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, drop_path[i], eps) for i in range(depth))
        self.group_token: nn.Parameter | None = None
        self.group_projector: nn.Module | None = None
        self.downsample: GroupingBlock | None = None
        if num_group_tokens > 0:
            self.group_token = nn.Parameter(_init_group_token(num_group_tokens, dim, zero=prev_num_group_tokens > 0))
            if prev_num_group_tokens > 0:
                self.group_projector = nn.Sequential(
                    nn.LayerNorm(dim, eps=eps), MixerMlp(prev_num_group_tokens, dim // 2, num_group_tokens)
                )
            self.downsample = GroupingBlock(
                dim, num_heads, num_group_tokens, num_output_groups, assign_mlp_ratio, hard, gumbel_tau, assign_eps, eps
            )

    def initial_group_tokens(self, batch: int, prev_group_tokens: Tensor | None) -> Tensor | None:
        if self.group_token is None:
            return None
        tokens = self.group_token.expand(batch, -1, -1)
        if self.group_projector is not None and prev_group_tokens is not None:
            tokens = tokens + self.group_projector(prev_group_tokens)
        return tokens

    def run_block(
        self, index: int, x: Tensor, group_tokens: Tensor | None, checkpointing: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """One transformer block over [x ; group tokens] (used by progressive mixing, block by block)."""
        joined = run_blocks(self.blocks[index : index + 1], self._join(x, group_tokens), checkpointing)
        return self._split(joined, group_tokens)

    def forward(
        self, x: Tensor, prev_group_tokens: Tensor | None, checkpointing: bool = False
    ) -> tuple[Tensor, Tensor | None, Assignment | None]:
        group_tokens = self.initial_group_tokens(x.shape[0], prev_group_tokens)
        x, group_tokens = self._split(run_blocks(self.blocks, self._join(x, group_tokens), checkpointing), group_tokens)
        return self.group(x, group_tokens)

    def group(self, x: Tensor, group_tokens: Tensor | None) -> tuple[Tensor, Tensor | None, Assignment | None]:
        """Apply the grouping block; returns segment tokens, the group tokens that made them, the assignment."""
        if self.downsample is None or group_tokens is None:
            return x, group_tokens, None
        segments, assignment = self.downsample(x, group_tokens)
        return segments, group_tokens, assignment

    @staticmethod
    def _join(x: Tensor, group_tokens: Tensor | None) -> Tensor:
        return x if group_tokens is None else torch.cat([x, group_tokens], dim=1)

    @staticmethod
    def _split(joined: Tensor, group_tokens: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if group_tokens is None:
            return joined, None
        count = group_tokens.shape[1]
        return joined[:, :-count], joined[:, -count:]


def _init_group_token(count: int, dim: int, zero: bool) -> Tensor:
    token = torch.zeros(1, count, dim)
    if not zero:
        nn.init.trunc_normal_(token, std=0.02)
    return token
