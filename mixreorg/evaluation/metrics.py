"""Segmentation metrics from a confusion matrix that lives on the inference device.

mIoU follows mmseg: IoU = intersection / union per class; classes that never occur in the ground
truth nor the prediction (union 0) are left out of the mean; pixels labelled ``ignore_index`` count
nowhere. Predicting a class that is absent from the ground truth gives that class an IoU of 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass
class SegmentationScores:
    miou: float  # percent, mean over classes with a non-empty union
    pixel_accuracy: float  # percent of non-ignored pixels labelled correctly
    mean_accuracy: float  # percent, mean per-class recall over classes present in the ground truth
    per_class_iou: dict[str, float | None] = field(default_factory=dict)  # percent, None where union is 0

    def group_miou(self, names: Sequence[str]) -> float:
        """Mean IoU over the classes ``names`` that have an IoU (NaN when none has)."""
        values = [self.per_class_iou[name] for name in names if self.per_class_iou.get(name) is not None]
        return sum(values) / len(values) if values else math.nan

    def as_dict(self, object_classes: Sequence[str] = ()) -> dict:
        """The scores; with ``object_classes``, also the mIoU of those classes and of the others apart."""
        record = {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "mean_accuracy": self.mean_accuracy,
            "per_class_iou": self.per_class_iou,
        }
        if object_classes:
            record["objects_miou"] = self.group_miou(object_classes)
            record["backgrounds_miou"] = self.group_miou([n for n in self.per_class_iou if n not in object_classes])
        return record


class ConfusionMatrix:
    """[C, C] int64 counts, rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add one or more label maps (any matching shapes). Targets outside [0, C) other than the
        ignore index are a dataset bug, so they raise instead of being silently dropped."""
        target = target.to(self.counts.device).long().flatten()
        prediction = prediction.to(self.counts.device).long().flatten()
        keep = target != self.ignore_index
        target, prediction = target[keep], prediction[keep]
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            bad = target[(target < 0) | (target >= self.num_classes)][0].item()
            raise ValueError(f"label {bad} is outside 0..{self.num_classes - 1} and is not the ignore index")
        index = target * self.num_classes + prediction
        self.counts += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def merge(self, other: ConfusionMatrix) -> None:
        self.counts += other.counts.to(self.counts.device)

    def all_reduce(self) -> None:
        """Sum the counts over every rank of the default process group (no-op when not distributed)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.counts, op=dist.ReduceOp.SUM)

    def scores(self, class_names: list[str] | None = None) -> SegmentationScores:
        counts = self.counts.double().cpu()
        true_positive = counts.diagonal()
        ground_truth = counts.sum(dim=1)
        predicted = counts.sum(dim=0)
        union = ground_truth + predicted - true_positive
        tp_list = true_positive.tolist()
        iou = [tp / u if u > 0 else math.nan for tp, u in zip(tp_list, union.tolist(), strict=True)]
        recall = [tp / g for tp, g in zip(tp_list, ground_truth.tolist(), strict=True) if g > 0]
        valid = [value for value in iou if not math.isnan(value)]
        total = ground_truth.sum().item()
        names = class_names or [str(i) for i in range(self.num_classes)]
        return SegmentationScores(
            miou=100 * sum(valid) / len(valid) if valid else math.nan,
            pixel_accuracy=100 * true_positive.sum().item() / total if total else math.nan,
            mean_accuracy=100 * sum(recall) / len(recall) if recall else math.nan,
            per_class_iou={name: (None if math.isnan(v) else 100 * v) for name, v in zip(names, iou, strict=True)},
        )


class TopKAccuracy:
    """Counts of top-k hits for zero-shot classification, mergeable across ranks like the matrix."""

    def __init__(self, ks: tuple[int, ...] = (1, 5), device: torch.device | str = "cpu") -> None:
        self.ks = ks
        self.hits = torch.zeros(len(ks), dtype=torch.int64, device=device)
        self.total = torch.zeros(1, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, logits: Tensor, target: Tensor) -> None:
        k_max = min(max(self.ks), logits.shape[-1])
        top = logits.topk(k_max, dim=-1).indices  # [B, k]
        correct = top == target.to(top.device).view(-1, 1)
        for i, k in enumerate(self.ks):
            self.hits[i] += correct[:, :k].any(dim=1).sum().to(self.hits.device)
        self.total += target.numel()

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.hits, op=dist.ReduceOp.SUM)
            dist.all_reduce(self.total, op=dist.ReduceOp.SUM)

    def scores(self) -> dict[str, float]:
        total = self.total.item()
        return {f"top{k}": (100 * self.hits[i].item() / total if total else math.nan) for i, k in enumerate(self.ks)}
