"""What the shared inference stages (``Predictor``, ``segment``, ``eval``) need from a kind of model.

A backend encodes label names once and scores image windows densely; the sliding window, resizing, protocols,
outputs and pictures are the same for every backend. ``GroupingBackend`` serves GroupViT and MixReorg
checkpoints; a training-free CLIP method would be a second class with the same three members.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol as Interface

import torch
from torch import Tensor

from mixreorg.errors import MixreorgError
from mixreorg.evaluation.protocols import Protocol
from mixreorg.evaluation.sliding import CropFn

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class DenseBackend(Interface):
    image_size: int  # the resolution the model was trained at: the protocol's geometry follows it
    model: torch.nn.Module

    def to(self, device: torch.device) -> DenseBackend:
        """Move the model to ``device``; returns the backend."""

    def encode_labels(self, labels: Sequence[Sequence[str]], templates: Sequence[str]) -> Tensor:
        """[C, D] label embeddings: one row per label, from its names (synonyms) and the templates."""

    def crop_scorer(self, embeddings: Tensor, protocol: Protocol, precision: str = "fp32") -> CropFn:
        """[N, 3, h, w] normalised windows -> [N, C (+1 background first), h, w] scores in 0-1."""


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise MixreorgError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise MixreorgError("--precision fp16 needs a GPU (CPUs compute fp16 slowly and inexactly); "
                            "use bf16 or fp32 on a CPU")
    return PRECISIONS[precision]


def autocast(device: torch.device, precision: str):
    """The forward-pass context for ``precision``: autocast for bf16/fp16 (weights stay fp32), nothing for fp32."""
    dtype = check_precision(precision, device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class GroupingBackend:
    """GroupViT and MixReorg: grouping maps x segment-text similarity (``mixreorg.inference.dense``)."""

    def __init__(self, model) -> None:
        self.model = model.eval()
        self.image_size = int(model.cfg.vision.image_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device) -> GroupingBackend:
        self.model.to(device)
        return self

    def encode_labels(self, labels: Sequence[Sequence[str]], templates: Sequence[str]) -> Tensor:
        """Each name's template-averaged embedding; a label with synonyms takes the normalised mean of its names'."""
        from mixreorg.evaluation.zero_shot import embed_classes

        names = [name for group in labels for name in group]
        embeddings = embed_classes(self.model, names, tuple(templates))
        if len(names) == len(labels):
            return embeddings
        owner = torch.tensor([index for index, group in enumerate(labels) for _ in group], device=embeddings.device)
        summed = embeddings.new_zeros(len(labels), embeddings.shape[1]).index_add_(0, owner, embeddings)
        return torch.nn.functional.normalize(summed, dim=-1)

    def crop_scorer(self, embeddings: Tensor, protocol: Protocol, precision: str = "fp32") -> CropFn:
        from mixreorg.evaluation.zero_shot import crop_scorer

        check_precision(precision, self.device)
        scorer = crop_scorer(self.model, embeddings, protocol.background, protocol.background_score,
                             protocol.dense_mode, protocol.top_k)
        if precision == "fp32":
            return scorer

        def score(crops: Tensor) -> Tensor:
            with autocast(crops.device, precision):
                return scorer(crops).float()

        return score
