"""GroupViT's projection head into the joint image-text space."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; every rank's loss reads the sum, so the gradient is the sum of their gradients."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def synced_batch_norm(x: Tensor, norm: nn.BatchNorm1d, update_stats: bool) -> Tensor:
    """Training-mode BatchNorm over [n, C] rows of every rank, on any backend (gloo included).

    torch.nn.SyncBatchNorm refuses CPU tensors, so the statistics are all-reduced here instead: first the
    mean, then the centred second moment (two passes, as accurate as the single-process kernel). The
    result equals plain BatchNorm over the concatenated global batch, which is what makes a 2-rank run
    match a 1-rank run on the same global batch.
    """
    x32 = x.float()
    count = x32.new_full((1,), float(x32.shape[0]))
    # The row count rides along with the sums: one collective instead of two, and no host sync.
    sums = _AllReduceSum.apply(torch.cat([x32.sum(dim=0), count]))
    total = sums[-1]
    mean = sums[:-1] / total
    var = _AllReduceSum.apply((x32 - mean).pow(2).sum(dim=0)) / total
    if update_stats and norm.track_running_stats and norm.running_mean is not None:
        with torch.no_grad():
            momentum = norm.momentum if norm.momentum is not None else 0.1
            norm.running_mean.lerp_(mean.detach().to(norm.running_mean.dtype), momentum)
            unbiased = var.detach() * (total / (total - 1.0).clamp(min=1.0))
            norm.running_var.lerp_(unbiased.to(norm.running_var.dtype), momentum)
            norm.num_batches_tracked += 1
    out = (x32 - mean) * torch.rsqrt(var + norm.eps)
    if norm.affine:
        out = out * norm.weight + norm.bias
    return out


class ProjectMLP(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear, applied to [B, C] vectors or [B, L, C] tokens.

    Plain BatchNorm so single-process runs need no process group; distributed training sets
    ``sync_batchnorm`` (GroupViT trains its projectors with SyncBN), and then the statistics come
    from the batch of every rank. ``update_stats=False`` normalises with the batch's own statistics
    but leaves the running statistics alone: MixReorg projects mixed segment tokens for its
    segmentation loss, and those must not shift the statistics that inference (on pooled features
    and clean tokens) uses. ``running_stats=True`` normalises with the running statistics instead
    (``model.mixing.segment_norm=running``).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.sync_batchnorm = False
        if num_layers == 2:
            self.linear_hidden = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU())
            self.linear_out = nn.Linear(hidden_dim, out_dim)
        elif num_layers == 1:
            self.linear_hidden = nn.Identity()
            self.linear_out = nn.Linear(in_dim, out_dim)
        else:
            raise ValueError(f"projection.num_layers must be 1 or 2, got {num_layers}")

    def forward(self, x: Tensor, update_stats: bool = True, running_stats: bool = False) -> Tensor:
        """``running_stats`` normalises with the running statistics even in training (as inference does)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if self.num_layers == 2:
            linear, norm, act = self.linear_hidden
            if running_stats and self.training:
                flat = act(F.batch_norm(linear(flat), norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                        False, 0.0, norm.eps))
            elif self.training and self.sync_batchnorm and _world_size() > 1:
                flat = act(synced_batch_norm(linear(flat), norm, update_stats))
            elif update_stats or not self.training:
                flat = self.linear_hidden(flat)
            else:
                flat = act(F.batch_norm(linear(flat), None, None, norm.weight, norm.bias, True, 0.0, norm.eps))
        flat = self.linear_out(flat)
        return flat.reshape(*shape[:-1], flat.shape[-1])
