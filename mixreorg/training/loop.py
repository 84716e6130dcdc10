"""The training run of one process: data, steps, checkpoints, logging, preemption, the final model."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mixreorg.config.loader import save_config
from mixreorg.config.schema import Config
from mixreorg.errors import MixreorgError
from mixreorg.training.distributed import (
    CollectiveError,
    DistEnv,
    barrier,
    detect_env,
    init_distributed,
    select_device,
    shutdown_distributed,
)
from mixreorg.training.launch import STATUS_FILE
from mixreorg.training.logging import RunLogger
from mixreorg.training.periodic_eval import PeriodicEval
from mixreorg.training.preflight import check_run
from mixreorg.training.run_state import RunPosition, resolve_resume, restore_run, save_run, seed_everything
from mixreorg.training.signals import StopRequest, catch_stop_signals
from mixreorg.training.trainer import StepResult, Trainer
from mixreorg.utils.io import atomic_write_text

CONFIG_FILE = "config.yaml"
FINAL_MODEL_DIR = "model"


@dataclass
class TrainingResult:
    run_dir: Path
    step: int
    total_steps: int
    checkpoint: Path | None  # the last checkpoint written (None if none was written by this process)
    final_model: Path | None  # our-format folder, written when the run completed
    stopped_by: str = ""  # "SIGTERM"/"SIGINT" when preempted, "" when it finished

    def status(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "step": self.step,
            "total_steps": self.total_steps,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "final_model": str(self.final_model) if self.final_model else None,
            "stopped_by": self.stopped_by,
        }


@dataclass(frozen=True)
class RunLength:
    micro_per_epoch: int  # micro-batches per rank per epoch (what the loader yields)
    steps_per_epoch: int  # optimizer steps per epoch
    total_steps: int
    warmup_steps: int


def build_loader(cfg: Config, data: str, env: DistEnv, epoch: int, start_batch: int = 0):
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


def run_length(cfg: Config, micro_per_epoch: int, world_size: int) -> RunLength:
    """Epochs (or ``train.max_steps``, which then also sets the schedule's length) in optimizer steps."""
    train = cfg.train
    steps_per_epoch = micro_per_epoch // train.accum_steps
    if steps_per_epoch < 1:
        raise MixreorgError(
            f"the data gives {micro_per_epoch} batches per rank per epoch, fewer than train.accum_steps="
            f"{train.accum_steps}; use more data, a smaller train.batch_size or fewer ranks "
            f"(global batch now {train.batch_size * world_size * train.accum_steps})"
        )
    total = train.max_steps if train.max_steps > 0 else train.epochs * steps_per_epoch
    warmup = min(round(train.warmup_epochs * steps_per_epoch), total)
    return RunLength(micro_per_epoch, steps_per_epoch, total, warmup)


def run_training(cfg: Config, data: str, run_dir: str | Path, resume: str | None = None) -> TrainingResult:
    """Train in this process as the rank the environment says (torchrun, srun, or a single process)."""
    run_dir = Path(run_dir).resolve()
    env = detect_env()
    check_run(cfg, data, run_dir, resume, world_size=env.world_size)  # before any process group exists
    device = select_device(env)
    init_distributed(env, device)
    try:
        with catch_stop_signals() as stop:
            return _train(cfg, data, run_dir, resume, env, device, stop)
    finally:
        shutdown_distributed()


def _train(
    cfg: Config, data: str, run_dir: Path, resume: str | None, env: DistEnv, device: torch.device, stop: StopRequest
) -> TrainingResult:
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / STATUS_FILE).unlink(missing_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE)
    resume_path = resolve_resume(run_dir, resume)
    length = run_length(cfg, build_loader(cfg, data, env, epoch=0).steps_per_epoch, env.world_size)
    trainer = Trainer(cfg, env, device, warmup_steps=length.warmup_steps, total_steps=length.total_steps)
    seed_everything(cfg.train.seed, env.rank)
    position = RunPosition(world_size=env.world_size, batch_size=cfg.train.batch_size)
    if resume_path is not None:
        position = restore_run(resume_path, trainer, env)
        if position.batch_in_epoch + cfg.train.accum_steps > length.micro_per_epoch:
            position.epoch, position.batch_in_epoch = position.epoch + 1, 0  # (a changed batch split)
    stop.on_request(trainer.request_stop)
    logger = RunLogger(
        run_dir,
        enabled=env.is_main,
        total_steps=length.total_steps,
        start_step=position.step,
        global_batch=trainer.global_batch,
        log_every=cfg.train.log_every,
    )
    if resume_path is not None:
        logger.message(f"resumed from {resume_path} at step {position.step} (epoch {position.epoch})")
    evaluator = PeriodicEval(cfg.train, env, device)
    try:
        result = _loop(cfg, data, run_dir, env, trainer, position, length, logger, evaluator, stop)
    finally:
        logger.close()
    if env.is_main:
        atomic_write_text(run_dir / STATUS_FILE, json.dumps(result.status(), indent=1) + "\n")
    return result


def _loop(
    cfg: Config,
    data: str,
    run_dir: Path,
    env: DistEnv,
    trainer: Trainer,
    position: RunPosition,
    length: RunLength,
    logger: RunLogger,
    evaluator: PeriodicEval,
    stop: StopRequest,
) -> TrainingResult:
    accum, train = cfg.train.accum_steps, cfg.train
    last_saved: Path | None = None
    saved_step = position.step if position.step else -1

    def save() -> None:
        nonlocal last_saved, saved_step
        last_saved = save_run(run_dir, trainer, position, env, train.keep_last) or last_saved
        saved_step = position.step
        logger.checkpoint_written()

    while position.step < length.total_steps:
        # Starting DataLoader workers draws a base seed from the global generator; the loader seeds itself
        # from (seed, epoch, rank, batch), so keep that draw off the stream gumbel noise comes from, or a
        # resumed run (which starts its loader mid-epoch) would see different noise than an uninterrupted one.
        with torch.random.fork_rng(devices=[]):
            batches = iter(build_loader(cfg, data, env, position.epoch, position.batch_in_epoch))
        while position.step < length.total_steps:
            micro = list(itertools.islice(batches, accum))
            if len(micro) < accum:  # the epoch ran out
                position.epoch, position.batch_in_epoch = position.epoch + 1, 0
                break
            result = trainer.train_step(micro)
            position.step += 1
            position.batch_in_epoch += accum
            epoch = position.epoch
            if position.batch_in_epoch + accum > length.micro_per_epoch:
                position.epoch, position.batch_in_epoch = position.epoch + 1, 0
            _count_bad_step(result, position, logger)
            logger.log_step(position.step, epoch, _record(result, position))
            if position.bad_in_row >= train.max_bad_steps:
                _stop_diverged(position, last_saved, run_dir)
            if result.stop_requested:  # preemption: spend the grace period on the checkpoint only
                save()
                signal_name = stop.name or "a stop signal on another rank"
                logger.message(f"{signal_name}: checkpoint of step {position.step} saved")
                return TrainingResult(run_dir, position.step, length.total_steps, last_saved, None,
                                      stopped_by=stop.name or "signal")
            if evaluator.due(position.step):
                logger.log_scalars(position.step, evaluator.run(trainer.model), prefix="eval")
            # Never checkpoint in the middle of a streak of skipped steps: the run may be diverging.
            if position.step % train.save_every == 0 and not result.skipped:
                save()
            if position.batch_in_epoch == 0:
                break
        del batches  # stops loader workers before the next epoch starts its own
    if saved_step != position.step:
        save()
    final = _export_final_model(trainer, cfg, run_dir, env)
    logger.message(f"finished {position.step} steps; final model in {final}")
    return TrainingResult(run_dir, position.step, length.total_steps, last_saved, final)


def _record(result: StepResult, position: RunPosition) -> dict:
    return {
        "loss": result.loss,
        **result.terms,
        "lr": result.lr,
        "grad_norm": result.grad_norm,
        "skipped": result.skipped,
        "bad_steps": position.bad_total,
    }


def _count_bad_step(result: StepResult, position: RunPosition, logger: RunLogger) -> None:
    if not result.skipped:
        position.bad_in_row = 0
        return
    position.bad_in_row += 1
    position.bad_total += 1
    logger.message(f"step {position.step}: loss or gradients not finite; step skipped ({position.bad_in_row} in a row)")


def _stop_diverged(position: RunPosition, last_saved: Path | None, run_dir: Path) -> None:
    """Too many skipped steps in a row means divergence: stop without writing anything."""
    from mixreorg.checkpoint import find_latest

    latest = last_saved or find_latest(run_dir)
    raise CollectiveError(
        f"loss or gradients were NaN/inf for {position.bad_in_row} steps in a row (up to step {position.step}); "
        f"stopped without saving, the last good checkpoint is {latest or 'none (none was written yet)'}; "
        "lower train.base_lr or check the data, then --resume auto"
    )


def _export_final_model(trainer: Trainer, cfg: Config, run_dir: Path, env: DistEnv) -> Path:
    from mixreorg.checkpoint.ours import save_pretrained

    target = run_dir / FINAL_MODEL_DIR
    if env.is_main:
        save_pretrained(trainer.model, cfg, target, overwrite=True)
    barrier()
    return target
