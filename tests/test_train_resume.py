"""Crashes and preemption: a kill -9 while a checkpoint is being written leaves the previous one loadable;
--resume auto continues the exact loss curve; SIGTERM writes a checkpoint before the run exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mixreorg.checkpoint import find_latest, load_training_checkpoint
from mixreorg.config import load_config
from mixreorg.model import build_model
from mixreorg.training.launch import train
from mixreorg.training.logging import read_metrics
from mixreorg.training.optim import build_optimizer

MIXREORG = Path(sys.executable).with_name("mixreorg")
# The tiny preset with gumbel noise on (so resuming must restore the random generators) and wide projector
# heads, which make each checkpoint ~100 MB: long enough to write that a kill can land in the middle of one.
BIG_HEADS = "model.projection.hidden_dim=32768"
OVERRIDES = [
    BIG_HEADS,
    "train.batch_size=8",
    "train.max_steps=6",
    "train.save_every=2",
    "train.keep_last=2",
    "train.log_every=1",
    "data.workers=1",
]


def _wait_for(condition, proc: subprocess.Popen | None, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run exited (code {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def _losses(run: Path) -> dict[int, float]:
    records = [r for r in read_metrics(run) if "loss" in r]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"steps logged twice or out of order: {steps}"
    return {r["step"]: r["loss"] for r in records}


def _step(folder: Path) -> int:
    return int(folder.name.split("_")[1])


def test_crash_mid_checkpoint_then_sigterm_then_resume_continue_the_uninterrupted_run(manifest, tmp_path):
    torch.set_num_threads(1)
    reference = tmp_path / "reference"
    train("tiny", manifest, reference, overrides=OVERRIDES)
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, 7))

    # 1. kill -9 while the second checkpoint is being written.
    run = tmp_path / "crashy"
    command = [str(MIXREORG), "train", "--config", "tiny", "--data", manifest, "--out", str(run), *OVERRIDES]
    proc = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    checkpoints = run / "checkpoints"

    def writing_second() -> bool:
        return find_latest(run) is not None and any(p.name.endswith(".partial") for p in checkpoints.iterdir())

    _wait_for(writing_second, proc, "the second checkpoint write")
    proc.kill()  # SIGKILL: no handler runs, nothing is flushed
    proc.wait()
    assert any(p.name.endswith(".partial") for p in checkpoints.iterdir()), "the kill missed the write"
    latest = find_latest(run)
    assert _step(latest) == 2 and (checkpoints / "latest").read_text().strip() == latest.name
    cfg = load_config("tiny", [BIG_HEADS])
    model = build_model(cfg)
    optimizer = build_optimizer(model, cfg.train, global_batch=8, device=torch.device("cpu"))
    assert load_training_checkpoint(latest, model, optimizer)["step"] == 2 and optimizer.state

    # 2. Resume; SIGTERM (as a scheduler preempting the job) once step 3 is logged: it saves step 3 and stops.
    assert max(_losses(run)) > 2, "the killed run logged steps past its last checkpoint"

    def preempt() -> None:
        # The resumed run first drops those records (its signal handlers are in place by then) ...
        _wait_for(lambda: max(_losses(run), default=0) <= 2, None, "the resumed run to start logging")
        # ... then logs its own step 3.
        _wait_for(lambda: max(_losses(run), default=0) >= 3, None, "step 3 after resuming")
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=preempt, daemon=True)
    sender.start()
    status = train("tiny", manifest, run, overrides=OVERRIDES, resume="auto")
    sender.join()
    assert status["stopped_by"] == "SIGTERM"
    assert _step(find_latest(run)) == status["step"] >= 3, "SIGTERM must checkpoint the step it stopped at"
    assert not any(p.name.endswith(".partial") for p in checkpoints.iterdir()), "the next save clears leftovers"

    # 3. Resume to the end: every step equals the uninterrupted run's. What a kill during pruning used to leave
    # (a step folder holding only its config) is cleared by the next save.
    (checkpoints / "step_000000001").mkdir()
    (checkpoints / "step_000000001" / "config.yaml").write_text("model: {}\n")
    status = train("tiny", manifest, run, overrides=OVERRIDES, resume="auto")
    assert not (checkpoints / "step_000000001").exists()
    assert status["step"] == 6 and not status["stopped_by"]
    resumed = _losses(run)
    assert sorted(resumed) == list(range(1, 7))
    # Same single-threaded kernels, data position and generator states (gumbel noise included): the same
    # numbers to the last bit; the tolerance only absorbs JSON float formatting.
    for step, loss in expected.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6, abs=1e-6), f"step {step}"
