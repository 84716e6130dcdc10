"""Who am I in the job: rank, world size and device from torchrun or SLURM, and the process group."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mixreorg.errors import MixreorgError

# Long enough for a slow checkpoint write or an evaluation on one rank while the others wait at a
# collective (open_clip users hit the 30-minute default there); short enough that a dead peer ends the job.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=60)


class CollectiveError(MixreorgError):
    """A failure every rank meets alike (bad input, a diverged loss): rank 0 alone reports it."""


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    launcher: str = "none"  # none | torchrun | slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int_env(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise MixreorgError(f"environment variable {name}={value!r} is not an integer") from exc


def inside_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ)


def inside_slurm_step() -> bool:
    """True inside an ``srun`` step of several tasks (each task is one rank), not in the batch script itself."""
    return "SLURM_PROCID" in os.environ and (_int_env("SLURM_STEP_NUM_TASKS", 0) or 0) > 1


def detect_env() -> DistEnv:
    """Rank and world size from torchrun's variables, else from an ``srun`` step, else a single process."""
    if inside_torchrun():
        return DistEnv(
            rank=_int_env("RANK", 0) or 0,
            local_rank=_int_env("LOCAL_RANK", 0) or 0,
            world_size=_int_env("WORLD_SIZE", 1) or 1,
            launcher="torchrun",
        )
    if inside_slurm_step():
        return DistEnv(
            rank=_int_env("SLURM_PROCID", 0) or 0,
            local_rank=_int_env("SLURM_LOCALID", 0) or 0,
            world_size=_int_env("SLURM_STEP_NUM_TASKS", 1) or 1,
            launcher="slurm",
        )
    return DistEnv()


def _slurm_master_addr() -> str:
    nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "")
    if nodes and shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    raise MixreorgError("under srun, set MASTER_ADDR to the first node's hostname (scontrol is not available here)")


def _export_slurm_rendezvous() -> None:
    """torch's env:// rendezvous reads these; srun tasks agree on them without talking to each other."""
    os.environ.setdefault("MASTER_ADDR", _slurm_master_addr())
    # A port derived from the job id: the same on every task, different for jobs sharing a node.
    job = _int_env("SLURM_JOB_ID", 0) or 0
    os.environ.setdefault("MASTER_PORT", str(20000 + job % 20000))
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_STEP_NUM_TASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")


def select_device(env: DistEnv) -> torch.device:
    """One GPU per rank (the local rank's), or the CPU when there is none."""
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if env.local_rank >= count:
            raise MixreorgError(
                f"local rank {env.local_rank} has no GPU: this node has {count}; "
                f"start at most {count} processes per node"
            )
        torch.cuda.set_device(env.local_rank)
        # What stays fp32 under autocast (losses, norms) may use TF32 tensor cores, as open_clip and GroupViT do.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def init_distributed(env: DistEnv, device: torch.device, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> None:
    """Start the process group (NCCL on GPUs, gloo on CPUs) when there is more than one rank."""
    if not env.distributed or dist.is_initialized():
        return
    if env.launcher == "slurm":
        _export_slurm_rendezvous()
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, timeout=timeout, **kwargs)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: object, env: DistEnv) -> list[object]:
    """Every rank's ``obj`` in rank order (a one-element list without a process group)."""
    if not env.distributed:
        return [obj]
    gathered: list[object] = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: object, env: DistEnv) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
