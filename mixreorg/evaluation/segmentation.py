"""Zero-shot semantic segmentation on one benchmark: decode in workers, slide on the device, count pixels."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Subset

from mixreorg.errors import MixreorgError
from mixreorg.evaluation.metrics import ConfusionMatrix
from mixreorg.evaluation.protocols import Protocol
from mixreorg.evaluation.readout import make_readout
from mixreorg.evaluation.sliding import CropFn, SlideSettings, segment_images
from mixreorg.inference.backend import DenseBackend, as_backend
from mixreorg.model.mixreorg import MixReorgModel
from mixreorg.utils.progress import progress_bar


@dataclass
class DatasetResult:
    dataset: str
    task: str  # segmentation | classification
    num_images: int
    seconds: float
    metrics: dict
    settings: dict = field(default_factory=dict)  # the resolved protocol or classification transform
    classes: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "task": self.task,
            "num_images": self.num_images,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "metrics": self.metrics,
            "settings": self.settings,
            "classes": self.classes,
        }


def rank_indices(total: int, limit: int | None, rank: int, world_size: int) -> list[int]:
    """This rank's share of the first ``limit`` samples (every world_size-th, so ranks stay balanced)."""
    count = total if limit is None else min(total, limit)
    return list(range(rank, count, world_size))


def _keep_as_list(batch: list) -> list:
    return batch  # images differ in size: no stacking


def make_loader(dataset, indices: list[int], batch_size: int, workers: int) -> DataLoader:
    # More decoding processes than cores only adds switching (and torch's warning).
    workers = min(workers, os.cpu_count() or 1)
    return DataLoader(
        Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_keep_as_list,
        prefetch_factor=4 if workers > 0 else None,
    )


def slide_settings(protocol: Protocol, batch_size: int) -> SlideSettings:
    return SlideSettings(
        short_side=protocol.short_side,
        long_side=protocol.long_side,
        crop=protocol.crop,
        stride=protocol.stride,
        mean=protocol.mean,
        std=protocol.std,
        scales=protocol.scales,
        flip=protocol.flip,
        batch_size=batch_size,
    )


def protocol_labels(class_names: Sequence[str], protocol: Protocol, has_background: bool) -> list[tuple[str, ...]]:
    """The labels (each a tuple of names) a model embeds for a benchmark under ``protocol``.

    groupvit and unified: every class but 'background' (that one comes from the protocol's rule). sclip: every
    class, from the manifest's class-name file when the protocol names one (synonyms, and background's stuff words).
    """
    if protocol.readout == "window":
        return [(name,) for name in (class_names[1:] if has_background else class_names)]
    if not protocol.class_names:
        return [(name,) for name in class_names]
    from mixreorg.data.benchmarks.manifest import manifest_dir
    from mixreorg.inference.inputs import read_labels_file

    groups = read_labels_file(manifest_dir() / protocol.class_names)
    if len(groups) != len(class_names):
        raise MixreorgError(f"the class-name file {protocol.class_names} lists {len(groups)} classes but the "
                            f"benchmark has {len(class_names)}; fix the file (one class per line)")
    return groups


def protocol_scorer(model, class_names: Sequence[str], protocol: Protocol, has_background: bool,
                    precision: str = "fp32") -> CropFn:
    """Embed the benchmark's labels once (``protocol_labels``) with a model or backend; the scorer is the one
    ``Predictor`` uses."""
    backend = as_backend(model)
    groups = protocol_labels(class_names, protocol, has_background)
    return backend.crop_scorer(backend.encode_labels(groups, protocol.templates, protocol.synonyms), protocol,
                               precision)


@torch.no_grad()
def evaluate_segmentation(
    model: MixReorgModel | DenseBackend | None,
    benchmark,
    protocol: Protocol,
    device: torch.device,
    batch_size: int = 8,
    workers: int = 2,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    scorer: CropFn | None = None,
    precision: str = "fp32",
) -> DatasetResult:
    """mIoU, per-class IoU and pixel accuracy of ``model`` (a checkpoint's model or any ``DenseBackend``) on
    ``benchmark`` (a SegmentationBenchmark).

    ``scorer`` replaces the model's zero-shot scores with any crop -> [N, classes, h, w] function (another
    method under the same protocol). With several ranks each one takes every world_size-th image and the
    confusion matrices are summed, so the result equals a single-process run.
    """
    if scorer is None:
        backend = as_backend(model).to(device)
        scorer = protocol_scorer(backend, list(benchmark.classes), protocol, benchmark.has_background, precision)
    readout = make_readout(protocol, protocol_labels(list(benchmark.classes), protocol, benchmark.has_background))
    settings = slide_settings(protocol, batch_size)
    indices = rank_indices(len(benchmark), limit, rank, world_size)
    total = len(rank_indices(len(benchmark), limit, 0, 1))
    matrix = ConfusionMatrix(len(benchmark.classes), device, benchmark.ignore_index)
    bar = progress_bar(total=total, desc=f"{benchmark.name} ({protocol.name})", unit="img", dynamic_ncols=True,
                       disable=not progress or rank != 0)
    start = time.perf_counter()
    for batch in make_loader(benchmark, indices, batch_size, workers):
        # torch.tensor copies: decoded images may be read-only views of PIL buffers.
        images = [torch.tensor(image, device=device) for image, _, _ in batch]
        predictions = segment_images(images, scorer, settings, readout)
        for prediction, (_, label, _) in zip(predictions, batch, strict=True):
            matrix.update(prediction, torch.tensor(label))
        bar.update(min(len(batch) * world_size, total - bar.n))
    matrix.all_reduce()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    bar.close()
    return DatasetResult(
        dataset=benchmark.name,
        task="segmentation",
        num_images=total,
        seconds=seconds,
        metrics=matrix.scores(list(benchmark.classes)).as_dict(benchmark.object_classes),
        settings={**protocol.as_dict(), "precision": precision},
        classes=list(benchmark.classes),
    )
