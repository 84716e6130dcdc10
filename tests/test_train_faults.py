"""Training's failure paths through the real command, loader workers on: every fault ends the run within
seconds with one line and leaves no process behind; the run folder has one owner; a full disk costs nothing
already saved; SIGTERM during a save still ends with a checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from mixreorg.checkpoint import find_latest
from mixreorg.data.synthetic import generate_corpus
from mixreorg.data.verify import write_manifest
from mixreorg.errors import MixreorgError
from mixreorg.training.run_folder import RunFolder, check_not_in_use

sys.path.insert(0, os.path.dirname(__file__))
from cli_runner import processes_in_group, run_isolated  # noqa: E402
from faults import rewrite_shard  # noqa: E402

MIXREORG = str(Path(sys.executable).with_name("mixreorg"))
FAULTS = [sys.executable, str(Path(__file__).with_name("faults.py"))]
TIMEOUT = 120  # a run here takes ~10 s; a hang never ends
RUN = ["train.batch_size=8", "train.log_every=1", "data.workers=2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """4 shards of 16 synthetic pairs (64 px) and their manifest."""
    root = tmp_path_factory.mktemp("faults") / "synth"
    generate_corpus(root, train_size=64, eval_size=0, image_size=64, shard_size=16)
    return root / "train"


def write_corpus(folder: Path, shards: list[tuple[str, int]]) -> str:
    """A manifest in ``folder`` declaring (shard name, samples) pairs."""
    write_manifest(folder / "manifest.json", [{"url": name, "num_samples": n} for name, n in shards])
    return str(folder / "manifest.json")


def all_corrupt(corpus: Path, folder: Path) -> str:
    folder.mkdir(parents=True)
    for shard in sorted(corpus.glob("*.tar")):
        rewrite_shard(shard, folder / shard.name, lambda name, data: b"not an image" if name.endswith(".jpg") else data)
    return write_corpus(folder, [(p.name, 16) for p in sorted(folder.glob("*.tar"))])


def empty_shard(corpus: Path, folder: Path) -> str:
    folder.mkdir(parents=True)
    for name in ("00000.tar", "00001.tar"):
        with tarfile.open(folder / name, "w"):
            pass  # a valid tar with no member
    return write_corpus(folder, [("00000.tar", 16), ("00001.tar", 16)])


def train_command(data: str, out: Path, *extra: str, fault: str = "") -> list[str]:
    head = [*FAULTS, fault] if fault else [MIXREORG]
    return [*head, "train", "--config", "tiny", "--data", data, "--out", str(out), *RUN, *extra]


def full_disk_line(run: Path) -> str:
    return f"error: no space left on {run}/checkpoints while saving step 4; the previous checkpoint step 2 is intact"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("all-corrupt", "no image of a whole batch of 8 could be decoded"),
        ("empty-shard", "read no usable sample from its shards"),
        ("worker-error", "injected fault in a loader worker"),
    ],
)
def test_a_loader_failure_ends_the_run_at_once_and_takes_its_start_back(corpus, tmp_path, case, message):
    data = {"all-corrupt": all_corrupt, "empty-shard": empty_shard}.get(case, lambda c, f: str(c / "manifest.json"))
    run = tmp_path / "run"
    command = train_command(data(corpus, tmp_path / "data"), run, "train.max_steps=4",
                            fault="worker-error" if case == "worker-error" else "")
    code, out, err = run_isolated(command, TIMEOUT)
    assert message in err
    if case == "worker-error":  # a bug: Python's traceback, and the exit code of an uncaught exception
        assert code == 1 and "Traceback" in err
    else:  # bad data: one line naming it, no traceback
        assert code == 2 and "Traceback" not in err and len(error_lines(err)) == 1, err
        assert message in error_lines(err)[0]
    assert not run.exists(), "a start that failed before its first step leaves no run folder"


def test_a_full_disk_at_a_save_names_the_intact_checkpoint(corpus, tmp_path):
    run = tmp_path / "run"
    command = train_command(str(corpus / "manifest.json"), run, "train.max_steps=6", "train.save_every=2",
                            fault="enospc-on-2")
    code, out, err = run_isolated(command, TIMEOUT)
    expected = full_disk_line(run)
    assert code == 2 and error_lines(err) == [expected] and "Traceback" not in err, err
    assert find_latest(run).name == "step_000000002"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000000002"]
    assert (run / "train.log").read_text().rstrip().endswith(expected)


def _can_mount_tmpfs(folder: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {folder}"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def test_a_really_full_disk_at_a_save(corpus, tmp_path):
    """The same on an 80 MB tmpfs (user and mount namespaces): torch.save's own failure is recognised."""
    run = tmp_path / "run"
    run.mkdir()
    if not _can_mount_tmpfs(run):
        pytest.skip("cannot mount a small tmpfs here (unshare -rm not permitted)")
    listing = tmp_path / "listing.txt"
    train = " ".join(train_command(str(corpus / "manifest.json"), run, "train.max_steps=4", "train.save_every=2"))
    script = (f"mount -t tmpfs -o size=80m tmpfs {run} && {{ {train}; code=$?; ls -a {run}/checkpoints > {listing}; "
              f"cat {run}/checkpoints/latest >> {listing}; exit $code; }}")
    code, out, err = run_isolated(["unshare", "-rm", "sh", "-c", script], TIMEOUT)
    expected = full_disk_line(run)
    assert code == 2 and error_lines(err) == [expected] and "Traceback" not in err, err
    assert listing.read_text().split() == [".", "..", "latest", "step_000000002", "step_000000002"]


def _wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (code {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _finish(proc: subprocess.Popen, stderr_path: Path) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the run hung")
    left = processes_in_group(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"
    return code, stderr_path.read_text()


def _start_held(command: list[str], tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """Start a run whose first checkpoint write waits for the returned release file."""
    release, log = tmp_path / "release", tmp_path / "held-run.txt"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "MIXREORG_TEST_RELEASE": str(release)})
    return proc, release, log


def _saving(run: Path) -> bool:
    checkpoints = run / "checkpoints"
    return checkpoints.is_dir() and any(p.name.endswith(".partial") for p in checkpoints.iterdir())


def test_sigterm_during_a_save_still_ends_with_a_checkpoint(corpus, tmp_path):
    run = tmp_path / "run"
    command = train_command(str(corpus / "manifest.json"), run, "train.max_steps=8", "train.save_every=2",
                            fault="held-save")
    proc, release, log = _start_held(command, tmp_path)
    _wait_for(lambda: _saving(run), proc, "the first checkpoint write")
    os.killpg(proc.pid, signal.SIGTERM)  # as a scheduler preempts a job: the whole process group
    time.sleep(0.5)  # the signal is in before the write goes on
    release.touch()
    code, err = _finish(proc, log)
    assert code == 143, err
    stopped = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped) == 1 and "at step 3" in stopped[0] and "--resume auto" in stopped[0], err
    assert find_latest(run).name == "step_000000003"  # the save under way finished, then the stop's own
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert json.loads((run / "status.json").read_text())["stopped_by"] == "SIGTERM"


def test_a_second_process_on_the_same_run_is_refused_naming_the_owner(corpus, tmp_path):
    run, data = tmp_path / "run", str(corpus / "manifest.json")
    command = train_command(data, run, "train.max_steps=4", "train.save_every=2", fault="held-save")
    first, release, log = _start_held(command, tmp_path)
    _wait_for(lambda: _saving(run), first, "the first run's first checkpoint write")
    for resume in ([], ["--resume", "auto"]):
        code, out, err = run_isolated(train_command(data, run, "train.max_steps=4", *resume), TIMEOUT)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"error: {run} is in use: process {first.pid} is training there")
    release.touch()
    code, err = _finish(first, log)
    assert code == 0, err
    status = json.loads((run / "status.json").read_text())
    assert status["step"] == 4 and not status["stopped_by"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert steps == [1, 2, 3, 4]


HOLD_LOCK = "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX); " \
            "print('locked', flush=True); time.sleep(120)"


def test_the_run_lock_names_its_holder_and_dies_with_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("4242 node7\n")  # as a rank 0 on another machine of the cluster wrote it
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for attempt in (lambda: check_not_in_use(run), RunFolder(run).acquire):
            with pytest.raises(MixreorgError, match=f"{run} is in use: process 4242 on node7 is training there"):
                attempt()
    finally:
        holder.kill()  # kill -9: no cleanup runs, the kernel drops the lock
        holder.wait()
    folder = RunFolder(run)
    folder.acquire()
    assert (run / ".lock").read_text().split()[0] == str(os.getpid())
    folder.release()
