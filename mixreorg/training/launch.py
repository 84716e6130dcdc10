"""``mixreorg train``: validate, then train in this process or start torchrun with one worker per GPU.

One process per node and rank is torchrun's job; this module only builds its command line. A process
that already is one rank (started by torchrun or ``srun``) trains in place and never launches again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mixreorg.config.loader import load_config
from mixreorg.config.schema import Config
from mixreorg.errors import MixreorgError
from mixreorg.training.distributed import inside_slurm_step, inside_torchrun

STATUS_FILE = "status.json"  # written by rank 0 at the end of a run (loop.py)

WORKER_MODULE = "mixreorg.training.worker"


@dataclass(frozen=True)
class LaunchOptions:
    gpus: int = 1  # processes per node: one per GPU, or CPU processes (gloo) on a machine without GPUs
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = ""
    master_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.gpus * self.nnodes


def resolve_run_config(config: str, data: str, overrides: list[str] | tuple[str, ...]) -> tuple[Config, str]:
    """The config (preset or YAML, then overrides) and the data spec (``--data`` wins over data.train_data)."""
    cfg = load_config(config, list(overrides))
    data = data or cfg.data.train_data
    cfg.data.train_data = data
    if cfg.method == "unpairseg":
        from mixreorg.unpairseg.stages import resolve_stage_config

        resolve_stage_config(cfg)  # stage 2 takes its architecture from its stage-1 checkpoint
    return cfg, data


def check_options(options: LaunchOptions) -> None:
    if options.gpus < 1 or options.nnodes < 1:
        raise MixreorgError("--gpus and --nnodes must be at least 1")
    if not 0 <= options.node_rank < options.nnodes:
        raise MixreorgError(f"--node-rank must be between 0 and {options.nnodes - 1}, got {options.node_rank}")
    if options.nnodes > 1 and not options.master_addr:
        raise MixreorgError("a multi-node run needs --master-addr (the hostname of the node with --node-rank 0)")
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available and options.gpus > available:
        raise MixreorgError(f"--gpus {options.gpus} but this node has {available} GPUs")


def torchrun_command(
    options: LaunchOptions, config: str, data: str, out: Path, resume: str | None, overrides: list[str]
) -> list[str]:
    """``python -m torch.distributed.run ... -m mixreorg.training.worker ...`` with this interpreter."""
    command = [sys.executable, "-m", "torch.distributed.run"]
    if options.nnodes == 1:
        command += ["--standalone"]  # a free local port: parallel runs never collide
    else:
        command += [
            f"--nnodes={options.nnodes}",
            f"--node-rank={options.node_rank}",
            f"--master-addr={options.master_addr}",
            f"--master-port={options.master_port}",
        ]
    command += [f"--nproc-per-node={options.gpus}", "--max-restarts=0", "-m", WORKER_MODULE]
    command += ["--config", config, "--data", data, "--out", str(out)]
    if resume:
        command += ["--resume", resume]
    return command + list(overrides)


def _child_env(options: LaunchOptions) -> dict[str, str]:
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in env:
        # torchrun would pin every CPU worker to one thread; share the cores instead.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // options.gpus))
    # On SIGTERM torchrun gives workers this long to finish their step and write a checkpoint before it
    # kills them (30 s by default, short for a large checkpoint on a network filesystem).
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "300")
    return env


def run_torchrun(command: list[str], env: dict[str, str]) -> int:
    """Run torchrun in its own session and pass it exactly one copy of SIGTERM/SIGINT.

    In the terminal's process group the workers would get Ctrl-C twice (from the terminal and from
    torchrun), and the second one would interrupt the checkpoint they write on the first.
    """
    child = subprocess.Popen(command, env=env, start_new_session=True)

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def read_status(run_dir: Path) -> dict:
    path = run_dir / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def train(
    config: str,
    data: str,
    out: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    resume: str | None = None,
    options: LaunchOptions = LaunchOptions(),
) -> dict:
    """Validate everything, then train; returns the run's status (step, total_steps, final_model, stopped_by)."""
    out = Path(out).resolve()
    overrides = list(overrides)
    cfg, data = resolve_run_config(config, data, overrides)
    from mixreorg.training.preflight import check_run
    from mixreorg.training.run_folder import check_not_in_use

    if inside_torchrun() and options.world_size > 1:
        raise MixreorgError("this process is already one rank of a torchrun job; drop --gpus/--nnodes here")
    # A torchrun worker, or one task of an `srun` step (each task one rank): train right here.
    if inside_torchrun() or (inside_slurm_step() and options.world_size == 1):
        from mixreorg.training.loop import run_training

        return run_training(cfg, data, out, resume).status()
    check_options(options)
    check_not_in_use(out)  # before the other checks: "in use by PID" explains a busy folder best
    check_run(cfg, data, out, resume, world_size=options.world_size)
    from mixreorg.training.loop import run_training  # the model code loads only once the input is good

    if options.world_size == 1:
        return run_training(cfg, data, out, resume).status()
    if Path(config).is_file():
        config = str(Path(config).resolve())
    (out / STATUS_FILE).unlink(missing_ok=True)  # a stale status must not describe this launch
    code = run_torchrun(torchrun_command(options, config, data, out, resume, overrides), _child_env(options))
    status = read_status(out)
    if code != 0 and not status.get("stopped_by"):
        raise MixreorgError(
            f"training workers exited with code {code} (their error is printed above); run folder {out}"
        )
    return status
