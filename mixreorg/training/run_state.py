"""Where a run stands (step, data position, RNG of every rank) and how it goes into and out of checkpoints."""

from __future__ import annotations

import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mixreorg.errors import MixreorgError
from mixreorg.training.distributed import DistEnv, all_gather_objects, barrier
from mixreorg.training.trainer import Trainer


@dataclass
class RunPosition:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch the next batch comes from
    batch_in_epoch: int = 0  # micro-batches of that epoch already consumed (the loader's start_batch)
    bad_in_row: int = 0
    bad_total: int = 0
    world_size: int = 1
    batch_size: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # data the loader skipped so far (data.skipped.COUNTS)


def seed_everything(seed: int, rank: int) -> None:
    """GroupViT's rank-shifted seeding for what runs after model init (gumbel noise, drop path)."""
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def save_run(run_dir: Path, trainer: Trainer, position: RunPosition, env: DistEnv, keep_last: int) -> Path | None:
    """Rank 0 writes one checkpoint holding every rank's RNG; all ranks wait until it is on disk."""
    from mixreorg.checkpoint import save_training_checkpoint
    from mixreorg.checkpoint.rng import capture_rng_state

    states = all_gather_objects(capture_rng_state(), env)
    path = None
    if env.is_main:
        extra = {"position": asdict(position), "rank_rng": states}
        path = save_training_checkpoint(
            run_dir, position.step, keep_last=keep_last, extra=extra, config=trainer.cfg, **trainer.trainable_state()
        )
    barrier()
    return path


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """``auto`` -> the latest checkpoint of ``run_dir`` (None when there is none yet); else the path given."""
    from mixreorg.checkpoint import find_latest

    if not resume:
        return None
    if resume == "auto":
        return find_latest(run_dir)
    path = Path(resume)
    if not path.exists():
        raise MixreorgError(f"--resume {resume}: no such checkpoint; pass --resume auto or an existing checkpoint path")
    return path


def restore_run(path: Path, trainer: Trainer, env: DistEnv) -> RunPosition:
    """Load model, optimizer, schedule and scaler from ``path``; restore this rank's RNG and the data position."""
    from mixreorg.checkpoint import load_training_checkpoint
    from mixreorg.checkpoint.rng import restore_rng_state

    # Every rank reads the same file; its own generators come from ``rank_rng``, not rank 0's.
    extra = load_training_checkpoint(path, restore_rng=False, **trainer.trainable_state())
    cfg_batch_size, seed = trainer.cfg.train.batch_size, trainer.cfg.train.seed
    position = RunPosition(**extra["position"])
    trainer.step_count = position.step
    states = extra.get("rank_rng") or []
    if position.world_size == env.world_size and position.batch_size == cfg_batch_size and len(states) > env.rank:
        restore_rng_state(states[env.rank])
    else:
        # A different split of the global batch: the sample order cannot continue exactly, only closely.
        warnings.warn(
            f"resuming with {env.world_size} ranks x batch {cfg_batch_size} instead of "
            f"{position.world_size} x {position.batch_size}: the data order and random streams restart "
            "from a position close to, not equal to, the interrupted run's",
            stacklevel=2,
        )
        old_global = position.world_size * position.batch_size
        new_global = env.world_size * cfg_batch_size
        position.batch_in_epoch = position.batch_in_epoch * old_global // max(new_global, 1)
        seed_everything(seed + position.step, env.rank)
    position.world_size, position.batch_size = env.world_size, cfg_batch_size
    return position
