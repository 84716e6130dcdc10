"""The GroupViT image encoder, with MixReorg's contextual layer and three-branch training forward."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mixreorg.config.schema import MixingConfig, VisionConfig
from mixreorg.model.grouping import Assignment
from mixreorg.model.layers import Block, run_blocks
from mixreorg.model.mixing import MixingPlan, mix, unmix
from mixreorg.model.patch_embed import PatchEmbed, resize_pos_embed
from mixreorg.model.stage import GroupingStage


@dataclass
class VisionOutput:
    tokens: Tensor  # [B, S, C] final segment tokens after the last LayerNorm
    pooled: Tensor  # [B, C] their average
    assignments: list[Assignment]  # one per grouping block, [B, S_out, N_in]
    grid: tuple[int, int]  # patch grid of the input


@dataclass
class MixReorgVisionOutput:
    original: VisionOutput
    mixed: VisionOutput
    restored: VisionOutput


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        if not (len(cfg.depths) == len(cfg.num_group_tokens) and len(cfg.num_output_groups) >= len(cfg.depths) - 1):
            raise ValueError("vision.depths, num_group_tokens and num_output_groups describe different stage counts")
        self.cfg = cfg
        self.grad_checkpointing = False
        grid = cfg.image_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_channels, cfg.width, cfg.layer_norm_eps, cfg.stem)
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, grid * grid, cfg.width), std=0.02))
        self.contextual_blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio, 0.0, cfg.layer_norm_eps) for _ in range(cfg.contextual_layers)
        )
        total = sum(cfg.depths)
        drop_path = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear, as torch.linspace
        self.layers = nn.ModuleList()
        start = 0
        for index, depth in enumerate(cfg.depths):
            groups = cfg.num_group_tokens[index]
            self.layers.append(
                GroupingStage(
                    dim=cfg.width,
                    depth=depth,
                    num_heads=cfg.heads,
                    mlp_ratio=cfg.mlp_ratio,
                    drop_path=drop_path[start : start + depth],
                    num_group_tokens=groups,
                    num_output_groups=cfg.num_output_groups[index] if groups else 0,
                    prev_num_group_tokens=cfg.num_group_tokens[index - 1] if index > 0 else 0,
                    assign_mlp_ratio=(cfg.assign_mlp_ratio[0], cfg.assign_mlp_ratio[1]),
                    hard=cfg.hard_assignment,
                    gumbel_tau=cfg.gumbel_tau,
                    assign_eps=cfg.assign_eps,
                    eps=cfg.layer_norm_eps,
                )
            )
            start += depth
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.apply(_init_weights)

    @property
    def num_segments(self) -> int:
        return [n for n in self.cfg.num_output_groups[: len(self.cfg.depths)] if n][-1]

    def embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Patch tokens with position embeddings, passed through the contextual layers (if any)."""
        tokens, grid = self.patch_embed(images)
        tokens = tokens + resize_pos_embed(self.pos_embed, grid).to(tokens.dtype)
        return run_blocks(self.contextual_blocks, tokens, self.grad_checkpointing and self.training), grid

    def forward(self, images: Tensor) -> VisionOutput:
        """The original branch only: what inference and GroupViT training use."""
        tokens, grid = self.embed(images)
        return self._stages(tokens, None, 0, [], grid)

    def _stages(
        self, x: Tensor, group_tokens: Tensor | None, first: int, assignments: list[Assignment], grid: tuple[int, int]
    ) -> VisionOutput:
        checkpointing = self.grad_checkpointing and self.training
        for stage in list(self.layers)[first:]:
            x, group_tokens, assignment = stage(x, group_tokens, checkpointing)
            if assignment is not None:
                assignments.append(assignment)
        x = self.norm(x)
        return VisionOutput(tokens=x, pooled=x.mean(dim=1), assignments=assignments, grid=grid)

    def forward_mixreorg(self, images: Tensor, plan: MixingPlan, mixing: MixingConfig) -> MixReorgVisionOutput:
        """Original, mixed and restored branches with all weights shared (spec section 8.2).

        Stage 1 runs the original and mixed branches block by block so that the last P blocks can add
        the re-mixed original features to the mixed branch (progressive mixing). After stage 1 the
        mixed tokens are un-mixed into the restored branch, and the three branches run the remaining
        stages as one batch of 3B.
        """
        original, grid = self.embed(images)
        first = self.layers[0]
        batch = original.shape[0]
        group_original = first.initial_group_tokens(batch, None)
        mixed, group_mixed = mix(original, plan), first.initial_group_tokens(batch, None)
        depth = len(first.blocks)
        first_progressive = depth - mixing.progressive_layers
        checkpointing = self.grad_checkpointing and self.training
        for index in range(depth):
            progressive = index >= first_progressive
            if progressive and mixing.progressive_mode == "input":
                mixed = mixed + _remix(original, plan, mixing.progressive_detach)
            # Both branches share the block, so they run as one batch of 2B.
            both, group_both = first.run_block(
                index, torch.cat([original, mixed]), torch.cat([group_original, group_mixed]), checkpointing
            )
            original, mixed = both.chunk(2)
            group_original, group_mixed = group_both.chunk(2)
            if progressive and mixing.progressive_mode == "output":
                mixed = mixed + _remix(original, plan, mixing.progressive_detach)
            elif progressive and mixing.progressive_mode == "average":
                mixed = 0.5 * (mixed + _remix(original, plan, mixing.progressive_detach))
        restored = unmix(mixed, plan)
        if mixing.restored_group_tokens == "original":
            group_restored = group_original
        else:
            group_restored = first.initial_group_tokens(batch, None)
        tokens = torch.cat([original, mixed, restored])
        group_tokens = torch.cat([group_original, group_mixed, group_restored])
        segments, group_tokens, assignment = first.group(tokens, group_tokens)
        joint = self._stages(segments, group_tokens, 1, [assignment] if assignment is not None else [], grid)
        return MixReorgVisionOutput(*(_slice_output(joint, part, batch) for part in range(3)))


def _remix(original: Tensor, plan: MixingPlan, detach: bool) -> Tensor:
    """Mix(Z_o) for progressive mixing; ``detach`` keeps the mixed branch's losses out of the original branch."""
    return mix(original.detach() if detach else original, plan)


def _slice_output(out: VisionOutput, part: int, batch: int) -> VisionOutput:
    window = slice(part * batch, (part + 1) * batch)
    return VisionOutput(
        tokens=out.tokens[window],
        pooled=out.pooled[window],
        assignments=[Assignment(hard=a.hard[window], soft=a.soft[window]) for a in out.assignments],
        grid=out.grid,
    )


def _init_weights(module: nn.Module) -> None:
    # GroupViT's init: truncated-normal Linear weights, zero biases; the patch conv keeps torch's default.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
