"""Checks that turn a doomed run into one clear line before any process group or worker starts."""

from __future__ import annotations

import math
import os
from pathlib import Path

from mixreorg.config.schema import METHODS, Config
from mixreorg.errors import MixreorgError
from mixreorg.training.distributed import CollectiveError
from mixreorg.training.precision import check_precision


def check_config(cfg: Config) -> None:
    train = cfg.train
    if cfg.method not in METHODS:
        raise MixreorgError(f"unknown method '{cfg.method}'; choose one of: {', '.join(METHODS)}")
    check_precision(train.precision)
    positive = {
        "train.batch_size": train.batch_size,
        "train.accum_steps": train.accum_steps,
        "train.save_every": train.save_every,
        "train.keep_last": train.keep_last,
        "train.max_bad_steps": train.max_bad_steps,
        "train.log_every": train.log_every,
    }
    for key, value in positive.items():
        if value < 1:
            raise MixreorgError(f"{key} must be at least 1, got {value}")
    if train.epochs < 1 and train.max_steps < 1:
        raise MixreorgError("set train.epochs or train.max_steps to at least 1")
    if train.max_steps < 0 or train.warmup_epochs < 0 or train.eval_every < 0 or cfg.data.workers < 0:
        raise MixreorgError(
            "train.max_steps, train.warmup_epochs, train.eval_every and data.workers cannot be negative"
        )
    _check_numbers(cfg)
    choices = {
        "loss.multi_label_positives": (cfg.loss.multi_label_positives, ("own", "same_word")),
        "loss.segmentation_texts": (cfg.loss.segmentation_texts, ("global", "local", "group")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise MixreorgError(f"{key} must be one of {', '.join(allowed)}, got '{value}'")
    if train.eval_every and not train.eval_dataset:
        raise MixreorgError(
            "train.eval_every is set but train.eval_dataset is empty; name a dataset or set train.eval_every=0"
        )


def _check_numbers(cfg: Config) -> None:
    """Learning rates, optimizer and data settings in their valid ranges (not a traceback from AdamW later)."""
    train, data = cfg.train, cfg.data
    rules = [
        ("train.base_lr", train.base_lr, train.base_lr > 0, "greater than 0"),
        ("train.warmup_lr", train.warmup_lr, train.warmup_lr >= 0, "0 or more"),
        ("train.min_lr", train.min_lr, train.min_lr >= 0, "0 or more"),
        ("train.weight_decay", train.weight_decay, train.weight_decay >= 0, "0 or more"),
        ("train.eps", train.eps, train.eps > 0, "greater than 0"),
        ("train.clip_grad", train.clip_grad, train.clip_grad >= 0, "0 (off) or more"),
        ("train.betas", train.betas, len(train.betas) == 2 and all(0 <= b < 1 for b in train.betas),
         "two numbers in [0, 1), e.g. [0.9, 0.999]"),
        ("data.crop_scale_min", data.crop_scale_min, 0 < data.crop_scale_min <= 1, "in (0, 1]"),
        ("data.max_bad_fraction", data.max_bad_fraction, 0 <= data.max_bad_fraction <= 1, "in [0, 1]"),
        ("data.shuffle_buffer", data.shuffle_buffer, data.shuffle_buffer >= 0, "0 (off) or more"),
        ("data.train_num_samples", data.train_num_samples, data.train_num_samples >= 0, "0 (the manifest's) or more"),
    ]
    for key, value, valid, expected in rules:
        numbers = value if isinstance(value, list) else [value]
        if not valid or not all(math.isfinite(v) for v in numbers):
            raise MixreorgError(f"{key} must be {expected}, got {value}")


def check_data(data: str, cfg: Config, world_size: int) -> int:
    """Every local shard exists and is readable, and each rank gets at least one; returns the shard count."""
    from mixreorg.data.verify import resolve_shards

    if not data:
        raise MixreorgError("no training data: pass --data SHARDS_OR_MANIFEST (or set data.train_data)")
    shards = resolve_shards(data, check_exists=True)
    unreadable = [u for u in shards.urls if os.path.isfile(u) and (not os.access(u, os.R_OK) or not os.path.getsize(u))]
    if unreadable:
        raise MixreorgError(f"{len(unreadable)} shards are unreadable or empty, first: {unreadable[0]}")
    count = len(shards.urls)
    if not cfg.data.resampled and count < world_size:
        raise MixreorgError(
            f"{count} shards cannot feed {world_size} ranks (each rank reads whole shards); use fewer ranks, "
            "split the data into more shards, or set data.resampled=true"
        )
    return count


def check_run_dir(run_dir: Path, resume: str | None) -> None:
    """Refuse to train over an existing run by accident; ``--resume`` continues it instead."""
    from mixreorg.checkpoint import find_latest

    if run_dir.exists() and not run_dir.is_dir():
        raise MixreorgError(f"--out {run_dir} is a file; pass a folder for the run")
    if resume and resume != "auto" and not Path(resume).exists():
        raise MixreorgError(f"--resume {resume}: no such checkpoint; pass --resume auto or an existing checkpoint")
    if not resume and run_dir.is_dir():
        latest = find_latest(run_dir)
        if latest is not None:
            raise MixreorgError(
                f"{run_dir} already holds a run (latest checkpoint {latest.name}); "
                "continue it with --resume auto or choose a new --out"
            )
    probe = run_dir if run_dir.exists() else next((p for p in run_dir.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK):
        raise MixreorgError(f"cannot write the run folder {run_dir}: {probe} is not writable")


def check_run(cfg: Config, data: str, run_dir: Path, resume: str | None, world_size: int) -> None:
    try:
        check_config(cfg)
        check_data(data, cfg, world_size)
        check_run_dir(Path(run_dir), resume)
        if cfg.train.eval_every > 0:
            from mixreorg.training.periodic_eval import open_eval_benchmark

            open_eval_benchmark(cfg.train.eval_dataset, cfg.train.eval_data_root)
        from mixreorg.training.methods import training_method  # the method's checks import its model code: last

        training_method(cfg).validate(cfg)
    except CollectiveError:
        raise
    except MixreorgError as exc:
        raise CollectiveError(str(exc)) from exc
