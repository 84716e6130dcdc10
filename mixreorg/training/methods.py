"""What the shared training stages ask of a method: its model, its data, and its loss on one micro-batch.

The trainer (trainer.py) owns the optimizer, schedule, precision, DDP and the bad-step guard; the loop (loop.py)
owns epochs, checkpoints and logging. Everything that differs between methods goes through ``TrainingMethod``,
chosen by the config's ``method``: ``GroupingMethod`` here (GroupViT and MixReorg) or
``mixreorg.unpairseg.method.UnpairSegMethod``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from mixreorg.config.schema import METHODS, Config
from mixreorg.errors import MixreorgError
from mixreorg.training.distributed import DistEnv

if TYPE_CHECKING:
    from mixreorg.model.mixing import MixingPlan
    from mixreorg.training.trainer import Trainer


class TrainingMethod(Protocol):
    name: str

    def validate(self, cfg: Config) -> None:
        """Raise a MixreorgError for a config that would only fail inside the run (before any process group)."""

    def build_model(self, cfg: Config) -> nn.Module:
        """The initialised model on the CPU (the trainer seeds torch first, so every rank builds the same)."""

    def prepare(self, model: nn.Module, cfg: Config, distributed: bool) -> None:
        """Settings on the built model before DDP wraps it: gradient checkpointing, synchronised statistics."""

    def build_loader(self, cfg: Config, data: str, env: DistEnv, epoch: int, start_batch: int = 0):
        """This rank's loader for one epoch, resumable at ``start_batch`` (a ``mixreorg.data.loader.TrainLoader``)."""

    def losses(self, trainer: Trainer, batch: tuple, micro: int) -> dict[str, Tensor]:
        """Forward one micro-batch through ``trainer.forward`` (under the trainer's autocast); ``"loss"`` is the
        total that is back-propagated, the other ``*_loss`` keys its weighted terms, any other key a diagnostic."""


def training_method(cfg: Config) -> TrainingMethod:
    if cfg.method == "mixreorg":
        return GroupingMethod()
    if cfg.method == "unpairseg":
        from mixreorg.unpairseg.method import UnpairSegMethod

        return UnpairSegMethod()
    raise MixreorgError(f"unknown method '{cfg.method}'; choose one of: {', '.join(METHODS)}")


def plan_seed(seed: int, step: int, micro: int, accum_steps: int) -> int:
    """A distinct, reproducible seed per micro-batch: the same on every rank and after a resume."""
    return (seed * 1_000_003 + step * accum_steps + micro) % (2**63)


def global_mixing_plan(
    env: DistEnv, local_batch: int, num_tokens: int, group_size: int, device: torch.device, seed: int
) -> MixingPlan:
    """Sample the plan for the whole global batch, keep this rank's groups.

    Every rank draws the same plan, so the mixing of a global batch does not depend on how it is split
    over ranks: a 2-rank run mixes exactly as a 1-rank run on the concatenated batch.
    """
    from mixreorg.model.mixing import sample_mixing_plan

    generator = torch.Generator(device=device).manual_seed(seed)
    plan = sample_mixing_plan(local_batch * env.world_size, num_tokens, group_size, device, generator)
    groups = local_batch // group_size
    return plan.select_groups(env.rank * groups, (env.rank + 1) * groups)


def enable_sync_batchnorm(model: nn.Module) -> None:
    """GroupViT's SyncBN projectors: BatchNorm statistics over the batch of every rank."""
    from mixreorg.model.projector import ProjectMLP

    for module in model.modules():
        if isinstance(module, ProjectMLP):
            module.sync_batchnorm = True


class GroupingMethod:
    """GroupViT and MixReorg: image-caption batches, the grouping encoder, the contrastive (+ MixReorg) losses."""

    name = "mixreorg"

    def validate(self, cfg: Config) -> None:
        from mixreorg.model.build import validate_model_config  # imports the model code

        mixing = cfg.model.mixing
        if mixing.enabled and cfg.train.batch_size % mixing.group_size:
            raise MixreorgError(
                f"train.batch_size={cfg.train.batch_size} (per rank) is not divisible by the mixing group "
                f"model.mixing.group_size={mixing.group_size}; use a multiple of {mixing.group_size}"
            )
        validate_model_config(cfg.model)

    def build_model(self, cfg: Config) -> nn.Module:
        from mixreorg.model import build_model

        return build_model(cfg)

    def prepare(self, model: nn.Module, cfg: Config, distributed: bool) -> None:
        checkpointing = cfg.train.grad_checkpointing
        model.image_encoder.grad_checkpointing = checkpointing
        if checkpointing and hasattr(model.text_encoder, "set_grad_checkpointing"):
            model.text_encoder.set_grad_checkpointing(True)
        if distributed:
            enable_sync_batchnorm(model)

    def build_loader(self, cfg: Config, data: str, env: DistEnv, epoch: int, start_batch: int = 0):
        from mixreorg.data.loader import build_train_loader

        return build_train_loader(
            data,
            batch_size=cfg.train.batch_size,
            rank=env.rank,
            world_size=env.world_size,
            workers=cfg.data.workers,
            seed=cfg.train.seed,
            epoch=epoch,
            image_size=cfg.model.vision.image_size,
            context_length=cfg.model.text.context_length,
            multi_label=cfg.loss.multi_label,
            augmentation=cfg.data.augmentation,
            crop_scale_min=cfg.data.crop_scale_min,
            shuffle_buffer=cfg.data.shuffle_buffer,
            resampled=cfg.data.resampled,
            num_samples=cfg.data.train_num_samples,
            start_batch=start_batch,
        )

    def mixing_plan(self, trainer: Trainer, images: Tensor, micro: int) -> MixingPlan | None:
        """This rank's share of the global plan for micro-batch ``micro`` of the current step (None: GroupViT)."""
        cfg = trainer.cfg
        mixing = cfg.model.mixing
        if not mixing.enabled:
            return None
        patch = cfg.model.vision.patch_size
        num_tokens = (images.shape[-2] // patch) * (images.shape[-1] // patch)
        seed = plan_seed(cfg.train.seed, trainer.step_count, micro, cfg.train.accum_steps)
        return global_mixing_plan(trainer.env, images.shape[0], num_tokens, mixing.group_size, trainer.device, seed)

    def losses(self, trainer: Trainer, batch: tuple, micro: int) -> dict[str, Tensor]:
        from mixreorg.losses import compute_losses

        images, texts, *rest = (part.to(trainer.device, non_blocking=True) for part in batch)
        images = trainer.normalized(images)
        words = rest[0] if rest else None
        plan = self.mixing_plan(trainer, images, micro)
        outputs = trainer.forward(images, texts, plan=plan) if plan is not None else trainer.forward(images, texts)
        return compute_losses(outputs, trainer.cfg.loss, trainer.cfg.model.mixing.group_size, words)
