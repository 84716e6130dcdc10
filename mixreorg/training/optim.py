"""AdamW with GroupViT's parameter groups, and its warmup + cosine learning-rate schedule (spec section 4)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mixreorg.config.schema import TrainConfig

# The recipe's learning rates are quoted for this global batch and scaled linearly from it.
REFERENCE_BATCH = 4096


def scaled_lr(lr: float, global_batch: int) -> float:
    return lr * global_batch / REFERENCE_BATCH


def skips_weight_decay(name: str, param: nn.Parameter) -> bool:
    """GroupViT's rule (1-D tensors and biases: norms, BatchNorm, biases), plus the 0-D temperatures.

    GroupViT tests ``len(shape) == 1``, so its 0-D ``logit_scale`` tensors are decayed; decaying a
    log-temperature pulls it towards 0 (temperature 1) for no reason, so we exclude them, as open_clip
    does. ``pos_embed`` and the group tokens are decayed, as in GroupViT.
    """
    return param.ndim <= 1 or name.endswith(".bias")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if skips_weight_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig, global_batch: int, device: torch.device) -> torch.optim.AdamW:
    """AdamW at the batch-scaled base learning rate; the fused kernel on CUDA (one launch per step)."""
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=scaled_lr(cfg.base_lr, global_batch),
        betas=(cfg.betas[0], cfg.betas[1]),
        eps=cfg.eps,
        fused=True if device.type == "cuda" else None,
    )


class WarmupCosineSchedule:
    """timm's ``CosineLRScheduler(t_initial=total, warmup_t=warmup, t_in_epochs=False)`` as GroupViT uses it.

    Linear warmup from ``warmup_lr`` to ``base_lr``; afterwards the cosine is evaluated at the absolute
    step (no warmup prefix): lr(t) = min + (base - min) * (1 + cos(pi t / total)) / 2, and ``min_lr``
    from ``total`` on. Its state is only the step, so a resumed run may change the recipe knowingly.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        base_lr: float,
        warmup_lr: float,
        min_lr: float,
        warmup_steps: int,
        total_steps: int,
    ) -> None:
        self.optimizer = optimizer
        self.base_lr, self.warmup_lr, self.min_lr = base_lr, warmup_lr, min_lr
        self.warmup_steps, self.total_steps = max(0, warmup_steps), max(1, total_steps)
        self.step_index = 0
        self._apply()

    @classmethod
    def from_config(
        cls, optimizer: torch.optim.Optimizer, cfg: TrainConfig, global_batch: int, warmup_steps: int, total_steps: int
    ) -> WarmupCosineSchedule:
        return cls(
            optimizer,
            base_lr=scaled_lr(cfg.base_lr, global_batch),
            warmup_lr=scaled_lr(cfg.warmup_lr, global_batch),
            min_lr=scaled_lr(cfg.min_lr, global_batch),
            warmup_steps=warmup_steps,
            total_steps=total_steps,
        )

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr + step * (self.base_lr - self.warmup_lr) / self.warmup_steps
        if step >= self.total_steps:
            return self.min_lr
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * step / self.total_steps))

    def _apply(self) -> None:
        lr = self.lr_at(self.step_index)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        """Advance to the next optimizer step's learning rate (call after ``optimizer.step()``)."""
        self.step_index += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step_index": self.step_index}

    def load_state_dict(self, state: dict) -> None:
        self.step_index = int(state["step_index"])
        self._apply()
