"""What a run says: skipped data counted by kind (log, metrics.jsonl, status.json) and data.max_bad_fraction;
plain log lines instead of progress bars when the output is a file (train, eval, data); bars on a terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import sys
import tarfile
from pathlib import Path

import pytest

from mixreorg.data.synthetic import generate_corpus
from mixreorg.data.verify import write_manifest
from mixreorg.training.logging import RunLogger
from mixreorg.utils.progress import PlainProgress, progress_bar

sys.path.insert(0, os.path.dirname(__file__))
from cli_runner import run_isolated  # noqa: E402
from faults import rewrite_shard  # noqa: E402

MIXREORG = str(Path(sys.executable).with_name("mixreorg"))
TIMEOUT = 120


@pytest.fixture(scope="module")
def stale(tmp_path_factory) -> Path:
    """4 shards of 16 pairs and a manifest that no longer matches them: 00000 has 3 undecodable images,
    00001 is cut off after 8 samples, 00002 is an empty tar, 00003 has one sample without a caption and
    its manifest entry says 20."""
    root = tmp_path_factory.mktemp("stale")
    generate_corpus(root / "synth", train_size=64, eval_size=0, image_size=64, shard_size=16)
    clean, data = root / "synth" / "train", root / "data"
    data.mkdir()
    broken = {f"{i:09d}.jpg" for i in (1, 5, 9)}
    rewrite_shard(clean / "00000.tar", data / "00000.tar", lambda name, raw: b"garbage" if name in broken else raw)
    with tarfile.open(clean / "00001.tar") as tar:
        ninth = next(m for m in tar.getmembers() if m.name.startswith(f"{24:09d}."))  # sample 8 of the shard
    (data / "00001.tar").write_bytes((clean / "00001.tar").read_bytes()[: ninth.offset_data + 10])
    with tarfile.open(data / "00002.tar", "w"):
        pass
    rewrite_shard(clean / "00003.tar", data / "00003.tar", lambda name, raw: None if name == f"{50:09d}.txt" else raw)
    write_manifest(data / "manifest.json", [{"url": f"{i:05d}.tar", "num_samples": n}
                                            for i, n in enumerate((16, 16, 16, 20))])
    return data / "manifest.json"


EXPECTED_SKIPS = {
    "samples_read": 72,  # 9 batches of 8: ceil(68 declared / 8), topped up from the usable samples
    "undecodable_images": 3,
    "unusable_masks": 0,  # image-mask data only
    "incomplete_samples": 1,
    "unreadable_shards": 1,
    "empty_shards": 1,
    "short_shards": 1,
    "samples_missing": 8 + 16 + 4,
}
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


def test_skipped_data_is_counted_by_kind_and_plain_lines_go_to_the_log(stale, tmp_path):
    run, stderr_file = tmp_path / "run", tmp_path / "stderr.txt"
    command = [MIXREORG, "train", "--config", "tiny", "--data", str(stale), "--out", str(run), "train.batch_size=8",
               "train.max_steps=9", "train.log_every=3", "train.save_every=4", "data.workers=1"]
    code, out, err = run_isolated(command, TIMEOUT, stderr_path=stderr_file)
    assert code == 0, err
    status = json.loads((run / "status.json").read_text())
    assert status["skipped_data"] == EXPECTED_SKIPS
    epoch = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "data/samples_read" in r]
    assert [{k: v for k, v in r.items() if k != "time"} for r in epoch] == [
        {"step": 9, "epoch": 0, **{f"data/{k}": v for k, v in EXPECTED_SKIPS.items()}}
    ]
    summary = ("3 undecodable images, 1 sample without an image or a caption, 1 unreadable shard, 1 empty shard, "
               "1 shard shorter than its manifest says, 28 samples the manifest lists missing")

    # Off a terminal: whole lines, no carriage returns, the same as train.log, and the end said once.
    assert "\r" not in err and out == ""
    log = (run / "train.log").read_text()
    lines = [line for line in err.splitlines() if re.match(STAMP, line)]
    assert [line[20:] for line in lines] == [line[20:] for line in log.splitlines()]
    messages = [line[20:] for line in lines]
    assert re.fullmatch(
        r"training tiny: 4\.\d\dM parameters, world size 1, global batch 8 \(8 per rank x 1 ranks x 1 accumulation "
        r"steps\), lr 0\.00025 \(train\.base_lr 0\.128 at batch 4096\), 9 steps \(9 per epoch\), fp32 on cpu, run "
        rf"folder {run}", messages[0])
    steps = [m for m in messages if m.startswith("step ")]
    assert [m.split()[1] for m in steps] == ["3/9", "6/9", "9/9"]
    assert all(re.fullmatch(r"step \d/9 epoch 0 \| loss [\d.]+ contrastive_loss [\d.]+ .*segmentation_loss [\d.]+ "
                            r"\| lr [\d.e+-]+ grad_norm [\d.]+ \| [\d.]+ img/s \| eta \d:\d\d:\d\d", m) for m in steps)
    saved = [m for m in messages if m.startswith("saved checkpoint")]
    assert [m.split()[2] for m in saved] == [str(run / "checkpoints" / f"step_00000000{s}") for s in (4, 8, 9)]
    assert f"epoch 0: 72 samples read; skipped {summary}" in messages
    finished = [m for m in messages if m.startswith("finished")]
    assert finished == [f"finished 9 steps; final model in {run / 'model'}; skipped data over the run: {summary}"]
    assert (err + out).count("finished 9 steps") == 1
    # The loader's own warnings: a few of each kind, then only the counts.
    assert err.count("skipped: undecodable image") == 3 and "(further ones are counted, not shown)" in err


def test_max_bad_fraction_stops_the_run_with_one_line(stale, tmp_path):
    run = tmp_path / "run"
    command = [MIXREORG, "train", "--config", "tiny", "--data", str(stale), "--out", str(run), "train.batch_size=8",
               "train.max_steps=20", "data.workers=1", "data.max_bad_fraction=0.25"]
    code, out, err = run_isolated(command, TIMEOUT)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith("error: stopped at step 9: 32 of 101 samples read so far were unusable (31.7%: ")
    assert errors[0].endswith("more than data.max_bad_fraction=0.25; check the shards with 'mixreorg data verify' "
                              "and train on the manifest it writes, or raise data.max_bad_fraction")


def test_eval_and_data_write_plain_progress_lines_off_a_terminal(tmp_path):
    synth = [MIXREORG, "data", "synth", "--out", str(tmp_path / "synth"), "--train-size", "8", "--eval-size", "4",
             "--image-size", "64", "--shard-size", "4"]
    code, _, err = run_isolated(synth, TIMEOUT, stderr_path=tmp_path / "synth.txt")
    assert code == 0 and "\r" not in err
    # 8 training pairs, 4 evaluation images and 1 image-mask pair (a fifth of the training size)
    assert re.fullmatch(rf"{STAMP}synth:   0% 0/13 .*\n(.*\n)*{STAMP}synth: 100% 13/13 \[.*img/s\]\n", err)
    from mixreorg.checkpoint import save_pretrained
    from mixreorg.config import load_config
    from mixreorg.model import build_model

    config = load_config("tiny")
    save_pretrained(build_model(config), config, tmp_path / "model")
    evaluate = [MIXREORG, "eval", "-d", "synthetic", "-c", str(tmp_path / "model"), "--data-root",
                str(tmp_path / "synth"), "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "results.json")]
    code, out, err = run_isolated(evaluate, TIMEOUT, stderr_path=tmp_path / "eval.txt")
    assert code == 0 and "\r" not in err, err
    assert re.fullmatch(rf"{STAMP}synthetic \(groupvit\):   0% 0/4 .*\n(.*\n)*{STAMP}synthetic \(groupvit\): 100% 4/4 "
                        r"\[.*img/s\]\n", err)


def test_a_terminal_still_gets_progress_bars(tmp_path):
    leader, follower = pty.openpty()
    with open(follower, "w") as terminal:
        bar = progress_bar(total=3, desc="eval", file=terminal)
        assert not isinstance(bar, PlainProgress)
        bar.update(3)
        bar.close()
        logger = RunLogger(tmp_path, enabled=True, total_steps=4, start_step=0, global_batch=8, log_every=1,
                           stream=terminal)
        logger.log_step(1, 0, {"loss": 1.5, "lr": 1e-3, "skipped": False})
        logger.message("a message above the bar")
        logger.close()
    shown = b""
    while True:  # all the terminal got (Linux: EIO once the other end is closed and drained)
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    shown = shown.decode()
    assert "\r" in shown and "a message above the bar" in shown and "step 1/4" not in shown
    assert "step 1/4 epoch 0 | loss 1.5000" in (tmp_path / "train.log").read_text()  # the log gets it anyway
    assert isinstance(progress_bar(total=3, file=io.StringIO()), PlainProgress)
