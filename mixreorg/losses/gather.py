"""Cross-rank feature gathering for the contrastive losses, with gradients flowing back to their owner."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when no process group is running, so single-process code needs none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        # Every rank's loss reads every rank's features: sum those gradients, keep our own slice.
        grad = grad.contiguous()
        dist.all_reduce(grad)
        rank, size = dist.get_rank(), dist.get_world_size()
        return grad.chunk(size)[rank]


def gather_features(tensor: Tensor, with_grad: bool = True) -> Tensor:
    """Concatenate ``tensor`` [n, ...] from all ranks in rank order; identity without a process group.

    ``with_grad=False`` gathers detached copies except this rank's own slice (open_clip's local mode).
    """
    rank, size = world()
    if size == 1:
        return tensor
    if with_grad:
        return _AllGatherWithGrad.apply(tensor)
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[rank] = tensor
    return torch.cat(parts)
