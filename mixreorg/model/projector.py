"""GroupViT's projection head into the joint image-text space."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ProjectMLP(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear, applied to [B, C] vectors or [B, L, C] tokens.

    Plain BatchNorm so single-process runs need no process group; distributed training converts it to
    SyncBatchNorm. ``update_stats=False`` normalises with the batch's own statistics but leaves the
    running statistics alone: MixReorg projects mixed segment tokens for its segmentation loss, and
    those must not shift the statistics that inference (on pooled features and clean tokens) uses.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        self.num_layers = num_layers
        if num_layers == 2:
            self.linear_hidden = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU())
            self.linear_out = nn.Linear(hidden_dim, out_dim)
        elif num_layers == 1:
            self.linear_hidden = nn.Identity()
            self.linear_out = nn.Linear(in_dim, out_dim)
        else:
            raise ValueError(f"projection.num_layers must be 1 or 2, got {num_layers}")

    def forward(self, x: Tensor, update_stats: bool = True) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if self.num_layers == 2:
            if update_stats or not self.training:
                flat = self.linear_hidden(flat)
            else:
                linear, norm, act = self.linear_hidden
                flat = act(F.batch_norm(linear(flat), None, None, norm.weight, norm.bias, True, 0.0, norm.eps))
        flat = self.linear_out(flat)
        return flat.reshape(*shape[:-1], flat.shape[-1])
