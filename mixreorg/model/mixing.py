"""MixReorg's patch mixing: permute patch tokens across groups of K images, keeping their positions.

For group g, position j and mixed image i, the token comes from source image ``perm[g, j, i]`` of the
group. Each original patch appears exactly once among the K mixed images, so ``unmix`` restores it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mixreorg.errors import MixreorgError


@dataclass
class MixingPlan:
    perm: Tensor  # [G, N, K] long: source image (within the group) of each mixed token
    inverse: Tensor  # [G, N, K] long: mixed image that holds each source token
    group_size: int

    def select_groups(self, start: int, stop: int) -> MixingPlan:
        """The plan of groups [start, stop): one rank's share of a plan sampled for the global batch."""
        return MixingPlan(self.perm[start:stop], self.inverse[start:stop], self.group_size)

    @property
    def labels(self) -> Tensor:
        """[B, N]: index in the local batch of the image (and caption) each mixed patch came from."""
        groups = self.perm.shape[0]
        offset = torch.arange(groups, device=self.perm.device).view(groups, 1, 1) * self.group_size
        return (self.perm + offset).permute(0, 2, 1).reshape(groups * self.group_size, -1)


def sample_mixing_plan(
    batch_size: int, num_tokens: int, group_size: int, device: torch.device, generator: torch.Generator | None = None
) -> MixingPlan:
    """Independent random permutations for every (group, patch position)."""
    if batch_size % group_size != 0:
        raise MixreorgError(
            f"batch of {batch_size} images per rank is not divisible by the mixing group size K={group_size}; "
            "make train.batch_size a multiple of model.mixing.group_size"
        )
    groups = batch_size // group_size
    noise = torch.rand(groups, num_tokens, group_size, generator=generator, device=device)
    perm = noise.argsort(dim=-1)
    inverse = perm.argsort(dim=-1)
    return MixingPlan(perm=perm, inverse=inverse, group_size=group_size)


def _permute_within_groups(tokens: Tensor, index: Tensor, group_size: int) -> Tensor:
    batch, num_tokens, dim = tokens.shape
    grouped = tokens.reshape(batch // group_size, group_size, num_tokens, dim)
    gather_index = index.permute(0, 2, 1).unsqueeze(-1).expand(-1, -1, -1, dim)
    return grouped.gather(1, gather_index).reshape(batch, num_tokens, dim)


def mix(tokens: Tensor, plan: MixingPlan) -> Tensor:
    """[B, N, C] original tokens -> [B, N, C] mixed tokens."""
    return _permute_within_groups(tokens, plan.perm, plan.group_size)


def unmix(tokens: Tensor, plan: MixingPlan) -> Tensor:
    """[B, N, C] mixed tokens -> [B, N, C] tokens back in their source images."""
    return _permute_within_groups(tokens, plan.inverse, plan.group_size)
