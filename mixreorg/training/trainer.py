"""One optimizer step of distributed training: model, DDP, optimizer, schedule, precision, bad-step guard.

The loop (loop.py) owns data, checkpoints and logging; this file owns what happens to one global batch,
so a test can drive a 1-process ``Trainer`` with the same global batch as a 2-process run.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from mixreorg.config.schema import Config
from mixreorg.data.transforms import normalize_pixels
from mixreorg.training.distributed import DistEnv
from mixreorg.training.methods import training_method
from mixreorg.training.optim import WarmupCosineSchedule, build_optimizer
from mixreorg.training.precision import autocast, build_scaler, resolve_precision

# What the method's loader yields: for GroupViT/MixReorg images [B, 3, S, S], tokens [B, 1 + K_txt, L], and
# optionally the prompt word ids [B, K_txt] (loader.Batch)
Batch = tuple


@dataclass
class StepResult:
    loss: float  # mean over the global batch (all ranks, all micro-batches)
    terms: dict[str, float]  # the weighted loss terms, same averaging
    grad_norm: float  # total gradient norm before clipping
    lr: float  # learning rate this step used
    skipped: bool  # non-finite loss or gradients: no parameter update
    stop_requested: bool  # some rank received SIGTERM/SIGINT


class Trainer:
    """Builds the method's model, wraps it for DDP/compile, and runs optimizer steps on given micro-batches."""

    def __init__(
        self, cfg: Config, env: DistEnv, device: torch.device, *, warmup_steps: int, total_steps: int
    ) -> None:
        train = cfg.train
        self.cfg, self.env, self.device = cfg, env, device
        self.precision = resolve_precision(train.precision, device)
        self.method = training_method(cfg)
        # The same seed on every rank gives identical initial weights (DDP would broadcast them anyway).
        torch.manual_seed(train.seed)
        self.model: torch.nn.Module = self.method.build_model(cfg).to(device)
        self.method.prepare(self.model, cfg, env.distributed)
        self.wrapped: torch.nn.Module = self.model
        if env.distributed:
            self.wrapped = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, **_no_buffer_sync()
            )
        self.forward = self.wrapped
        if train.torch_compile:
            if train.grad_checkpointing and env.distributed:
                # DDP graph splitting and activation checkpointing do not compose (pytorch #108269).
                importlib.import_module("torch._dynamo").config.optimize_ddp = False
            self.forward = torch.compile(self.wrapped)
        self.global_batch = train.batch_size * env.world_size * train.accum_steps
        self.optimizer = build_optimizer(self.model, train, self.global_batch, device)
        self.schedule = WarmupCosineSchedule.from_config(
            self.optimizer, train, self.global_batch, warmup_steps, total_steps
        )
        self.scaler = build_scaler(self.precision, device)
        self.step_count = 0  # optimizer steps taken (skipped steps included)
        self._stop_flag = False
        self._normalized: Tensor | None = None  # the float batch uint8 images are normalised into, reused

    def request_stop(self) -> None:
        """Called from a signal handler: every rank learns about it at the end of the current step."""
        self._stop_flag = True

    def normalized(self, images: Tensor) -> Tensor:
        """The loader's uint8 pixels normalised on the device into one reused float batch (a fresh ~40 MB one would
        page-fault every step on a CPU); float images as they are."""
        if images.dtype != torch.uint8:
            return images
        if self._normalized is None or self._normalized.shape != images.shape:
            self._normalized = torch.empty(images.shape, dtype=torch.float32, device=self.device)
        return normalize_pixels(images, out=self._normalized)

    def _micro_step(self, batch: Batch, micro: int, last: bool) -> dict[str, Tensor]:
        sync = last or not self.env.distributed
        no_sync = self.wrapped.no_sync() if not sync else contextlib.nullcontext()
        with no_sync:
            with autocast(self.precision, self.device):
                losses = self.method.losses(self, batch, micro)
            loss = losses["loss"].float() / self.cfg.train.accum_steps
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return {key: value.detach().float() for key, value in losses.items()}

    def train_step(self, micro_batches: list[Batch]) -> StepResult:
        """One optimizer step over ``accum_steps`` micro-batches (no gradient all-reduce until the last)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        buffers = {name: buf.clone() for name, buf in self.model.named_buffers()}
        lr = self.optimizer.param_groups[0]["lr"]
        totals: dict[str, Tensor] = {}
        for micro, batch in enumerate(micro_batches):
            terms = self._micro_step(batch, micro, last=micro == len(micro_batches) - 1)
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + value / len(micro_batches)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.train.clip_grad if self.cfg.train.clip_grad > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        summary = self._reduce(totals, grad_norm)
        skipped = summary.pop("_bad") > 0
        stop = summary.pop("_stop") > 0
        grad_norm_value = summary.pop("_grad_norm")
        if skipped:
            # Nothing from this batch may survive: gradients, BatchNorm statistics, scaler state.
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for name, buf in self.model.named_buffers():
                    buf.copy_(buffers[name])
            if self.scaler is not None:
                self.scaler.update()
        elif self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.schedule.step()
        self.step_count += 1
        loss = summary.pop("loss")
        return StepResult(
            loss=loss, terms=summary, grad_norm=grad_norm_value, lr=lr, skipped=skipped, stop_requested=stop
        )

    def _reduce(self, totals: dict[str, Tensor], grad_norm: Tensor) -> dict[str, float]:
        """Average the loss terms over ranks and agree on skip/stop, in one small all-reduce."""
        keys = sorted(totals)
        values = torch.stack([totals[k].reshape(()) for k in keys]).to(self.device)
        grad_norm = grad_norm.float().reshape(()).to(self.device)
        bad = (~torch.isfinite(values)).any().float()
        if self.scaler is None:  # with fp16 an overflowing gradient is the scaler's business (it skips itself)
            bad = bad + (~torch.isfinite(grad_norm)).float()
        stop = torch.tensor(float(self._stop_flag), device=self.device)
        # Gradients are identical on every rank after DDP's all-reduce, so the summed norm / world is the norm.
        packed = torch.cat([values, torch.stack([grad_norm, bad, stop])])
        if self.env.distributed:
            dist.all_reduce(packed)
        packed = packed.cpu().tolist()  # the step's one host sync
        world = self.env.world_size
        result = {k: packed[i] / world for i, k in enumerate(keys)}
        result["_grad_norm"], result["_bad"], result["_stop"] = packed[-3] / world, packed[-2], packed[-1]
        return result

    def trainable_state(self) -> dict:
        """What a checkpoint needs besides the run position: the live objects for the checkpoint module."""
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.schedule, "scaler": self.scaler}


def _no_buffer_sync() -> dict:
    """GroupViT's ``broadcast_buffers=False``: running statistics come from synchronised batches, so they
    already agree across ranks; newer torch names the option ``forward_sync_buffers``."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}
