"""Our checkpoint format and resumable training checkpoints: exact round trips, atomicity, crash safety."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixreorg.checkpoint import (
    find_latest,
    load_model,
    load_pretrained,
    load_training_checkpoint,
    save_pretrained,
    save_training_checkpoint,
)
from mixreorg.checkpoint import training as training_module
from mixreorg.config import load_config
from mixreorg.errors import MixreorgError
from mixreorg.model import build_model

OVERRIDES = ["model.text.vocab_size=512", "model.text.context_length=8", "model.projection.hidden_dim=64"]




def make_run(seed: int = 0):
    torch.manual_seed(seed)
    config = load_config("tiny_groupvit", OVERRIDES)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    return config, model, optimizer, scheduler, scaler


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh random data from every generator a loader may use (python, numpy, torch)."""
    images = torch.randn(4, 3, 64, 64) + random.random() + float(np.random.rand())
    tokens = torch.randint(1, 500, (4, 1, 8))
    tokens[..., -1] = 511  # EOT: the largest id, where the text tower pools
    return images, tokens


def train_step(model, optimizer, scheduler, scaler) -> float:
    model.train()  # gumbel noise and drop path draw from torch's generator
    images, texts = batch()
    out = model(images, texts)
    logits = out.logit_scale * F.normalize(out.image, dim=-1) @ F.normalize(out.text, dim=-1).t()
    loss = F.cross_entropy(logits, torch.arange(4))
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.item()


def test_pretrained_round_trip_is_exact_and_self_contained(tmp_path):
    config, model, *_ = make_run()
    model.eval()
    folder = save_pretrained(model, config, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model.safetensors"]
    loaded, loaded_config = load_pretrained(folder)
    assert loaded_config == config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images)[0], loaded.encode_image(images)[0])
    # load_model detects the format from the folder alone (or its weights file).
    assert load_model(folder / "model.safetensors")[1] == config


def test_failed_save_leaves_no_folder_and_keeps_the_previous_one(tmp_path, monkeypatch):
    config, model, *_ = make_run()
    folder = save_pretrained(model, config, tmp_path / "model")
    before = (folder / "model.safetensors").read_bytes()

    def broken_config_writer(cfg, path):
        Path(path).write_text("model: {")  # half written, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("mixreorg.checkpoint.ours.save_config", broken_config_writer)
    with pytest.raises(OSError):
        save_pretrained(build_model(config), config, folder, overwrite=True)
    with pytest.raises(OSError):
        save_pretrained(model, config, tmp_path / "fresh")
    assert (folder / "model.safetensors").read_bytes() == before
    assert not (tmp_path / "fresh").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folders left behind


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    config, model, optimizer, scheduler, scaler = make_run()
    for _ in range(3):
        train_step(model, optimizer, scheduler, scaler)
    random.seed(7)
    np.random.seed(7)
    extra = {"epoch": 1, "batch_in_epoch": 17, "seen": [3, 4]}
    path = save_training_checkpoint(tmp_path, 3, model, optimizer, scheduler, scaler, extra, keep_last=2, config=config)
    assert path == tmp_path / "checkpoints" / "step_000000003" and find_latest(tmp_path) == path
    expected = [train_step(model, optimizer, scheduler, scaler) for _ in range(2)]

    _, fresh, fresh_opt, fresh_sched, fresh_scaler = make_run(seed=123)
    torch.manual_seed(999)  # generators elsewhere: the checkpoint must restore them
    restored = load_training_checkpoint(tmp_path, fresh, fresh_opt, fresh_sched, fresh_scaler)
    assert restored == {**extra, "step": 3}
    assert fresh_sched.last_epoch == 3 and fresh_scaler.get_scale() == scaler.get_scale()
    resumed = [train_step(fresh, fresh_opt, fresh_sched, fresh_scaler) for _ in range(2)]
    assert resumed == expected
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())
    # A step folder is also a plain pretrained checkpoint.
    assert load_model(path)[1] == config


def test_keep_last_prunes_older_steps_only(tmp_path):
    config, model, optimizer, *_ = make_run()
    for step in (5, 10, 15, 20):
        save_training_checkpoint(tmp_path, step, model, optimizer, keep_last=2, config=config)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step_000000015", "step_000000020"]
    # Resuming from an older step and saving does not delete the later (abandoned) steps.
    save_training_checkpoint(tmp_path, 16, model, optimizer, keep_last=2, config=config)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert names == ["step_000000015", "step_000000016", "step_000000020"]
    assert find_latest(tmp_path).name == "step_000000016"
    assert load_model(tmp_path)[1] == config  # a run folder loads as its latest checkpoint


def test_a_prune_cut_short_leaves_nothing_that_outlives_the_next_save(tmp_path, monkeypatch):
    config, model, optimizer, *_ = make_run()
    for step in (1, 2):
        save_training_checkpoint(tmp_path, step, model, optimizer, keep_last=1, config=config)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000000002"]
    # A kill while step 2 is being deleted: the folder was renamed first, so only hidden debris is left.
    monkeypatch.setattr(training_module.shutil, "rmtree", lambda *args, **kwargs: None)
    save_training_checkpoint(tmp_path, 3, model, optimizer, keep_last=1, config=config)
    monkeypatch.undo()
    assert [p.name for p in root.iterdir() if p.name.startswith("step_")] == ["step_000000003"]
    # What an older version's interrupted delete left: a step folder holding only its config.
    (root / "step_000000001").mkdir()
    (root / "step_000000001" / "config.yaml").write_text("model: {}\n")
    save_training_checkpoint(tmp_path, 4, model, optimizer, keep_last=1, config=config)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000000004"]


def test_non_plain_extra_is_refused_before_anything_is_written(tmp_path):
    config, model, *_ = make_run()
    with pytest.raises(TypeError, match="extra"):
        save_training_checkpoint(tmp_path, 1, model, extra={"loader": object()}, config=config)
    assert find_latest(tmp_path) is None


def test_failing_writer_keeps_latest_on_the_previous_checkpoint(tmp_path, monkeypatch):
    config, model, optimizer, *_ = make_run()
    first = save_training_checkpoint(tmp_path, 1, model, optimizer, keep_last=3, config=config)
    real_save = torch.save

    def dies_halfway(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(100)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(training_module.torch, "save", dies_halfway)
    with pytest.raises(MixreorgError, match=r"could not write step 2 .*Input/output error.*step 1 is intact"):
        save_training_checkpoint(tmp_path, 2, model, optimizer, keep_last=3, config=config)
    monkeypatch.undo()
    assert find_latest(tmp_path) == first
    assert sorted(p.name for p in first.parent.iterdir()) == ["latest", first.name]
    assert load_training_checkpoint(tmp_path, model, optimizer)["step"] == 1


CHILD = textwrap.dedent(
    """
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from mixreorg.checkpoint import save_training_checkpoint
    from mixreorg.config import load_config
    from mixreorg.model import build_model

    run = sys.argv[1]
    config = load_config("tiny_groupvit", {overrides!r})
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters())
    save_training_checkpoint(run, 1, model, optimizer, extra={{"epoch": 0}}, config=config)
    model.logit_scale.data.fill_(3.0)
    real_save = torch.save

    def killed_while_writing(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(handle.tell() // 2)
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = killed_while_writing
    save_training_checkpoint(run, 2, model, optimizer, extra={{"epoch": 1}}, config=config)
    """
).format(overrides=OVERRIDES)


def test_sigkill_while_writing_never_breaks_latest(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    root = tmp_path / "run" / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_000000001"
    assert not (root / "step_000000002").exists()
    assert [p for p in root.iterdir() if p.name.endswith(".partial")]  # the half-written attempt
    config, model, optimizer, *_ = make_run()
    extra = load_training_checkpoint(tmp_path / "run", model, optimizer)
    assert extra == {"epoch": 0, "step": 1}
    assert model.logit_scale.item() != 3.0
    # The next save succeeds and clears the debris.
    save_training_checkpoint(tmp_path / "run", 2, model, optimizer, config=config)
    assert find_latest(tmp_path / "run").name == "step_000000002"
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_crash_before_the_pointer_moves_keeps_the_previous_latest(tmp_path, monkeypatch):
    config, model, optimizer, *_ = make_run()
    first = save_training_checkpoint(tmp_path, 1, model, optimizer, config=config)

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_module, "atomic_write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        save_training_checkpoint(tmp_path, 2, model, optimizer, config=config)
    monkeypatch.undo()
    # The step-2 folder is complete, but only 'latest' decides: resuming picks step 1.
    assert (first.parent / "step_000000002" / "training_state.pt").is_file()
    assert find_latest(tmp_path) == first


def test_missing_pointer_falls_back_to_the_newest_complete_step(tmp_path):
    config, model, *_ = make_run()
    for step in (1, 2):
        save_training_checkpoint(tmp_path, step, model, config=config)
    (tmp_path / "checkpoints" / "latest").unlink()
    os.remove(tmp_path / "checkpoints" / "step_000000002" / "training_state.pt")  # incomplete
    assert find_latest(tmp_path).name == "step_000000001"
    with pytest.raises(MixreorgError, match="no complete training checkpoint"):
        load_training_checkpoint(tmp_path / "elsewhere", model)
