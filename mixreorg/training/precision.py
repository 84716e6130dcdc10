"""Mixed precision: bf16 autocast on GPUs by default, fp32 on CPUs, fp16 with a GradScaler on request."""

from __future__ import annotations

import contextlib

import torch

from mixreorg.errors import MixreorgError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise MixreorgError(f"train.precision must be one of {', '.join(PRECISIONS)}, got '{name}'")


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 on GPUs that support it (fp16 on older ones), fp32 on CPUs."""
    check_precision(name)
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp16" and device.type != "cuda":
        raise MixreorgError("train.precision=fp16 needs a GPU; use fp32 (or bf16) on CPUs")
    return name


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """Loss scaling is needed only for fp16's narrow exponent range; bf16 and fp32 run without it."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
