"""Patch mixing is an invertible per-position permutation within groups of K, with exact source labels."""

from __future__ import annotations

import pytest
import torch

from mixreorg.errors import MixreorgError
from mixreorg.model.mixing import mix, sample_mixing_plan, unmix


def _tokens_that_know_their_source(batch: int, num_tokens: int) -> torch.Tensor:
    """Channel 0 = source image index, channel 1 = patch position."""
    image = torch.arange(batch).view(batch, 1).expand(batch, num_tokens)
    position = torch.arange(num_tokens).view(1, num_tokens).expand(batch, num_tokens)
    return torch.stack([image, position], dim=-1).float()


def test_mix_keeps_positions_labels_sources_and_inverts():
    generator = torch.Generator().manual_seed(0)
    batch, num_tokens, k = 12, 49, 4
    plan = sample_mixing_plan(batch, num_tokens, k, torch.device("cpu"), generator)
    tokens = _tokens_that_know_their_source(batch, num_tokens)
    mixed = mix(tokens, plan)
    # Every patch stays at its position and comes from an image of its own group of K.
    assert torch.equal(mixed[..., 1], tokens[..., 1])
    assert torch.equal(mixed[..., 0].long(), plan.labels)
    group_of_row = torch.arange(batch).view(batch, 1) // k
    assert torch.equal(plan.labels // k, group_of_row.expand(batch, num_tokens))
    # Each source patch appears exactly once among the K mixed images of its group.
    for group in range(batch // k):
        sources = mixed[group * k : (group + 1) * k, :, 0]
        assert torch.equal(
            sources.sort(dim=0).values,
            torch.arange(group * k, (group + 1) * k).float().view(k, 1).expand(k, num_tokens),
        )
    assert torch.equal(unmix(mixed, plan), tokens)
    # The mixing is not the identity: most mixed patches come from another image.
    assert (plan.labels != torch.arange(batch).view(batch, 1)).float().mean() > 0.5


def test_group_slices_of_a_global_plan_equal_a_local_plan():
    plan = sample_mixing_plan(16, 9, 4, torch.device("cpu"), torch.Generator().manual_seed(1))
    tokens = torch.randn(16, 9, 5)
    second_half = plan.select_groups(2, 4)
    assert torch.equal(mix(tokens, plan)[8:], mix(tokens[8:], second_half))
    assert torch.equal(plan.labels[8:] - 8, second_half.labels)


def test_batch_must_be_a_multiple_of_k():
    with pytest.raises(MixreorgError, match="not divisible by the mixing group size K=16"):
        sample_mixing_plan(24, 4, 16, torch.device("cpu"))
