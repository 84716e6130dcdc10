"""The training run of one process: data, steps, checkpoints, logging, preemption, the final model."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mixreorg.config.loader import save_config
from mixreorg.config.schema import Config
from mixreorg.errors import MixreorgError
from mixreorg.training.data_skips import SkippedData, run_summary
from mixreorg.training.distributed import (
    CollectiveError,
    DistEnv,
    barrier,
    broadcast_object,
    detect_env,
    init_distributed,
    select_device,
    shutdown_distributed,
)
from mixreorg.training.launch import STATUS_FILE
from mixreorg.training.logging import CURVES_FILE, LOG_FILE, METRICS_FILE, TENSORBOARD_DIR, RunLogger
from mixreorg.training.optim import REFERENCE_BATCH, scaled_lr
from mixreorg.training.periodic_eval import PeriodicEval
from mixreorg.training.preflight import check_run
from mixreorg.training.run_folder import RunFolder
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
    skipped_data: dict[str, int] = field(default_factory=dict)  # over the whole run (data.skipped.COUNTS)

    def status(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "step": self.step,
            "total_steps": self.total_steps,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "final_model": str(self.final_model) if self.final_model else None,
            "stopped_by": self.stopped_by,
            "skipped_data": self.skipped_data,
        }


@dataclass(frozen=True)
class RunLength:
    micro_per_epoch: int  # micro-batches per rank per epoch (what the loader yields)
    steps_per_epoch: int  # optimizer steps per epoch
    total_steps: int
    warmup_steps: int


def build_loader(cfg: Config, data: str, env: DistEnv, epoch: int, start_batch: int = 0):
    from mixreorg.training.methods import training_method

    return training_method(cfg).build_loader(cfg, data, env, epoch, start_batch)


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
    folder = RunFolder(run_dir)
    try:
        _claim(folder, env)
        with catch_stop_signals() as stop:
            return _train(cfg, data, run_dir, resume, env, device, stop, folder)
    finally:
        folder.release()
        shutdown_distributed()


def _claim(folder: RunFolder, env: DistEnv) -> None:
    """Rank 0 takes the run folder's lock; every rank learns whether it could."""
    problem = ""
    if env.is_main:
        try:
            folder.acquire()
        except MixreorgError as exc:
            problem = str(exc)
        except OSError as exc:
            problem = f"cannot create or lock {folder.lock} ({exc.strerror or exc}); choose a writable --out"
    problem = broadcast_object(problem, env)
    if problem:
        raise CollectiveError(problem)


# What a run writes at its start: a start that fails before its first step takes them back.
STARTUP_FILES = [CONFIG_FILE, STATUS_FILE, METRICS_FILE, TENSORBOARD_DIR, LOG_FILE, CURVES_FILE]


def _train(
    cfg: Config,
    data: str,
    run_dir: Path,
    resume: str | None,
    env: DistEnv,
    device: torch.device,
    stop: StopRequest,
    folder: RunFolder,
) -> TrainingResult:
    resume_path = resolve_resume(run_dir, resume)
    position = RunPosition(world_size=env.world_size, batch_size=cfg.train.batch_size)
    logger: RunLogger | None = None
    try:
        if env.is_main:
            (run_dir / STATUS_FILE).unlink(missing_ok=True)
            save_config(cfg, run_dir / CONFIG_FILE)
        length = run_length(cfg, build_loader(cfg, data, env, epoch=0).steps_per_epoch, env.world_size)
        trainer = Trainer(cfg, env, device, warmup_steps=length.warmup_steps, total_steps=length.total_steps)
        seed_everything(cfg.train.seed, env.rank)
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
        logger.message(startup_summary(cfg, trainer, length, run_dir))
        if resume_path is not None:
            logger.message(f"resumed from {resume_path} at step {position.step} (epoch {position.epoch})")
        evaluator = PeriodicEval(cfg.train, env, device)
        result = _loop(cfg, data, run_dir, env, trainer, position, length, logger, evaluator, stop)
    except BaseException as exc:
        if logger is not None:
            logger.error(exc)
            logger.close()
        if env.is_main and resume_path is None and position.step == 0:
            from mixreorg.checkpoint import find_latest

            folder.discard_failed_start(STARTUP_FILES + ([] if find_latest(run_dir) else ["checkpoints"]))
        raise
    logger.close()
    if env.is_main:
        atomic_write_text(run_dir / STATUS_FILE, json.dumps(result.status(), indent=1) + "\n")
    return result


def startup_summary(cfg: Config, trainer: Trainer, length: RunLength, run_dir: Path) -> str:
    """Parameters, world size, global batch and the absolute learning rate, said once at the start."""
    train, world = cfg.train, trainer.env.world_size
    parameters = sum(p.numel() for p in trainer.model.parameters())
    lr = scaled_lr(train.base_lr, trainer.global_batch)
    return (
        f"training {run_name(cfg)}: {parameters / 1e6:.2f}M parameters{_frozen(trainer.model)}, world size {world}, "
        f"global batch "
        f"{trainer.global_batch} ({train.batch_size} per rank x {world} ranks x {train.accum_steps} accumulation "
        f"steps), lr {lr:.3g} (train.base_lr {train.base_lr:g} at batch {REFERENCE_BATCH}), {length.total_steps} "
        f"steps ({length.steps_per_epoch} per epoch), {trainer.precision} on {trainer.device}, run folder {run_dir}"
    )


def run_name(cfg: Config) -> str:
    """What a run trains, as its start line and logs name it."""
    if cfg.method == "unpairseg":
        return f"unpairseg (stage {cfg.unpairseg.stage}) on {cfg.unpairseg.model.backbone}"
    return cfg.model.name


def _frozen(model: torch.nn.Module) -> str:
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return f" ({frozen / 1e6:.2f}M of them frozen)" if frozen else ""


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
    skips = SkippedData(env, cfg.data.max_bad_fraction, position.skipped)

    def save() -> None:
        nonlocal last_saved, saved_step
        position.skipped = skips.totals()
        start = time.perf_counter()
        written = save_run(run_dir, trainer, position, env, train.keep_last)
        last_saved, saved_step = written or last_saved, position.step
        logger.checkpoint_written(written, time.perf_counter() - start)

    while position.step < length.total_steps:
        # Starting DataLoader workers draws a base seed from the global generator; the loader seeds itself
        # from (seed, epoch, rank, batch), so keep that draw off the stream gumbel noise comes from, or a
        # resumed run (which starts its loader mid-epoch) would see different noise than an uninterrupted one.
        with torch.random.fork_rng(devices=[]):
            loader = build_loader(cfg, data, env, position.epoch, position.batch_in_epoch)
            batches = iter(loader)
        skips.loader, loader_epoch = loader, position.epoch
        try:
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
                if position.step % train.log_every == 0:
                    skips.check(position.step)
                if result.stop_requested:  # preemption: spend the grace period on the checkpoint only
                    save()
                    signal_name = stop.name or "a stop signal on another rank"
                    logger.message(
                        f"stopped by {signal_name} at step {position.step}: checkpoint {last_saved} saved; "
                        f"continue with: mixreorg train ... --out {run_dir} --resume auto"
                    )
                    return TrainingResult(run_dir, position.step, length.total_steps, last_saved, None,
                                          stopped_by=stop.name or "signal", skipped_data=skips.totals())
                if evaluator.due(position.step):
                    logger.log_scalars(position.step, evaluator.run(trainer.model), prefix="eval")
                # Never checkpoint in the middle of a streak of skipped steps: the run may be diverging.
                if position.step % train.save_every == 0 and not result.skipped:
                    save()
                if position.batch_in_epoch == 0:
                    break
        finally:
            batches.close()  # on every path: its workers ignore SIGTERM and must not outlive the loop
        counts, line = skips.end_epoch(loader_epoch, complete=position.epoch > loader_epoch)
        logger.log_epoch_data(position.step, loader_epoch, counts, line)
        skips.check(position.step, epoch_end=True)
    if saved_step != position.step:
        save()
    final = _export_final_model(trainer, cfg, run_dir, env, last_saved)
    totals = skips.totals()
    logger.message(f"finished {position.step} steps; final model in {final}; {run_summary(totals)}")
    return TrainingResult(run_dir, position.step, length.total_steps, last_saved, final, skipped_data=totals)


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


def _export_final_model(trainer: Trainer, cfg: Config, run_dir: Path, env: DistEnv, checkpoint: Path | None) -> Path:
    from mixreorg.checkpoint.atomic_dir import WRITE_ERRORS, write_failed
    from mixreorg.checkpoint.ours import save_pretrained

    target = run_dir / FINAL_MODEL_DIR
    if env.is_main:
        try:
            save_pretrained(trainer.model, cfg, target, overwrite=True)
        except WRITE_ERRORS as exc:
            intact = f"the last checkpoint {checkpoint} is intact and loads as a model too"
            raise write_failed(exc, "the final model", target, intact) from exc
    barrier()
    return target
