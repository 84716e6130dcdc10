"""What the shared inference stages (``Predictor``, ``segment``, ``eval``) need from a kind of model.

A backend encodes label names once and scores image windows densely; the sliding window, resizing, protocols,
readouts, outputs and pictures are the same for every backend. ``GroupingBackend`` serves GroupViT and MixReorg
checkpoints; ``mixreorg.training_free.TrainingFreeBackend`` serves the training-free CLIP methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol as Interface

import torch
from torch import Tensor

from mixreorg.errors import MixreorgError
from mixreorg.evaluation.protocols import IMAGENET_MEAN, IMAGENET_STD, Protocol
from mixreorg.evaluation.sliding import CropFn

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class DenseBackend(Interface):
    image_size: int  # the resolution the model was trained at: the protocol's geometry follows it
    mean: tuple[float, float, float]  # the model's input normalisation, in pixel units (0-255)
    std: tuple[float, float, float]
    model: torch.nn.Module

    def to(self, device: torch.device) -> DenseBackend:
        """Move the model to ``device``; returns the backend."""

    def encode_labels(self, labels: Sequence[Sequence[str]], templates: Sequence[str],
                      synonyms: str = "mean") -> Tensor:
        """Label embeddings from each label's names (synonyms) and the templates: [C, D], one row per label, its
        names' mean ("mean"), or [Q, D], one row per name in order ("max": the protocol's readout combines them)."""

    def crop_scorer(self, embeddings: Tensor, protocol: Protocol, precision: str = "fp32") -> CropFn:
        """[N, 3, h, w] normalised windows -> scores: [N, C (+1 background first), h, w] in 0-1 (protocol readout
        "window"), or [N, Q, h, w] cosine similarities with each name (readout "softmax")."""


def as_backend(model) -> DenseBackend:
    """A backend as is; a model that names its own (``inference_backend()``, e.g. Unpair-Seg's) in that; a GroupViT
    or MixReorg model in ``GroupingBackend``."""
    if hasattr(model, "crop_scorer"):
        return model
    if hasattr(model, "inference_backend"):
        return model.inference_backend()
    return GroupingBackend(model)


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise MixreorgError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise MixreorgError("--precision fp16 needs a GPU (CPUs compute fp16 slowly and inexactly); "
                            "use bf16 or fp32 on a CPU")
    return PRECISIONS[precision]


def with_precision(scorer: CropFn, precision: str) -> CropFn:
    """``scorer`` under autocast for bf16/fp16 (its outputs back in fp32); fp32 as is."""
    if precision == "fp32":
        return scorer

    def score(crops: Tensor) -> Tensor:
        with autocast(crops.device, precision):
            return scorer(crops).float()

    return score


def cosine_crop_scorer(cosines: CropFn, scale: float, protocol: Protocol, precision: str = "fp32") -> CropFn:
    """The scorer of a backend whose windows give each label's (or name's) cosine similarity per pixel: the cosines
    themselves under the softmax readout (sclip); otherwise softmax(scale x cosine) over the labels (CLIP's
    probabilities), refined per window with PAMR where the protocol says, then the protocol's background rule
    (the threshold rule capped by the window's best score, as GroupViT caps by its best segment)."""
    from mixreorg.evaluation.pamr import refine_windows
    from mixreorg.evaluation.zero_shot import apply_background

    if protocol.readout == "softmax":
        return with_precision(cosines, precision)
    window_pamr = protocol.pamr_steps if protocol.pamr_stage == "window" else 0

    @torch.no_grad()
    def score(crops: Tensor) -> Tensor:
        probs = (scale * cosines(crops)).softmax(dim=1)
        if window_pamr:
            probs = refine_windows(crops, probs, window_pamr, protocol.pamr_dilations)
        return apply_background(probs, protocol.background, protocol.background_score, probs)

    return with_precision(score, precision)


def group_embeddings(per_name: Tensor, labels: Sequence[Sequence[str]]) -> Tensor:
    """[Q, D] normalised name embeddings -> [C, D]: each label's names averaged and renormalised."""
    if per_name.shape[0] == len(labels):
        return per_name
    owner = torch.tensor([index for index, group in enumerate(labels) for _ in group], device=per_name.device)
    summed = per_name.new_zeros(len(labels), per_name.shape[1]).index_add_(0, owner, per_name)
    return torch.nn.functional.normalize(summed, dim=-1)


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
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD  # GroupViT's training normalisation

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device) -> GroupingBackend:
        self.model.to(device)
        return self

    def encode_labels(self, labels: Sequence[Sequence[str]], templates: Sequence[str],
                      synonyms: str = "mean") -> Tensor:
        """Each name's template-averaged embedding; a label with synonyms takes the normalised mean of its names'
        ("mean"), or every name keeps its row ("max")."""
        from mixreorg.evaluation.zero_shot import embed_classes

        per_name = embed_classes(self.model, [name for group in labels for name in group], tuple(templates))
        return per_name if synonyms == "max" else group_embeddings(per_name, labels)

    def crop_scorer(self, embeddings: Tensor, protocol: Protocol, precision: str = "fp32") -> CropFn:
        from mixreorg.evaluation.zero_shot import crop_scorer
        from mixreorg.inference.dense import dense_cosines

        check_precision(precision, self.device)
        if protocol.readout == "softmax":
            return with_precision(lambda crops: dense_cosines(self.model, crops, embeddings), precision)
        window_pamr = protocol.pamr_stage == "window"
        scorer = crop_scorer(self.model, embeddings, protocol.background, protocol.background_score,
                             protocol.dense_mode, protocol.top_k, protocol.pamr_steps if window_pamr else 0,
                             protocol.pamr_dilations)
        return with_precision(scorer, precision)
