"""Zero-shot ImageNet classification (spec 5.1): 7 prompt templates, top-1 / top-5 accuracy."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor

from mixreorg.data.templates import SUBSET_TEMPLATES
from mixreorg.evaluation.metrics import TopKAccuracy
from mixreorg.evaluation.protocols import IMAGENET_MEAN, IMAGENET_STD
from mixreorg.evaluation.segmentation import DatasetResult, make_loader, rank_indices
from mixreorg.evaluation.zero_shot import embed_classes
from mixreorg.model.mixreorg import MixReorgModel
from mixreorg.utils.progress import progress_bar


def classification_settings(image_size: int) -> dict:
    """GroupViT's eval transform at the model's size: Resize(256/224 x size, bilinear) -> CenterCrop(size)."""
    return {
        "templates": list(SUBSET_TEMPLATES),
        "resize_short_side": round(image_size * 256 / 224),
        "center_crop": image_size,
        "interpolation": "bilinear (antialiased, as PIL)",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def center_crop_batch(images: list[Tensor], short_side: int, crop: int) -> Tensor:
    """[H, W, 3] uint8 images -> [B, 3, crop, crop] normalised float (torchvision Resize + CenterCrop)."""
    out = []
    mean = torch.tensor(IMAGENET_MEAN, device=images[0].device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images[0].device).view(3, 1, 1)
    for image in images:
        height, width = image.shape[:2]
        # torchvision's Resize(int): the short side becomes exactly short_side, the long side is truncated.
        if height <= width:
            size = (short_side, int(short_side * width / height))
        else:
            size = (int(short_side * height / width), short_side)
        x = image.permute(2, 0, 1).float()[None]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        top, left = int(round((size[0] - crop) / 2)), int(round((size[1] - crop) / 2))
        out.append((x[:, top : top + crop, left : left + crop] - mean) / std)
    return torch.stack(out)


@torch.no_grad()
def evaluate_classification(
    model: MixReorgModel,
    benchmark,
    device: torch.device,
    batch_size: int = 64,
    workers: int = 2,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> DatasetResult:
    """Top-1 / top-5 of ``model`` on ``benchmark`` (a ClassificationBenchmark with prompt class names)."""
    model = model.to(device).eval()
    image_size = model.cfg.vision.image_size
    settings = classification_settings(image_size)
    embeddings = embed_classes(model, list(benchmark.classes), SUBSET_TEMPLATES)
    indices = rank_indices(len(benchmark), limit, rank, world_size)
    total = len(rank_indices(len(benchmark), limit, 0, 1))
    accuracy = TopKAccuracy((1, 5), device)
    bar = progress_bar(total=total, desc=f"{benchmark.name} (zero-shot)", unit="img", dynamic_ncols=True,
                       disable=not progress or rank != 0)
    start = time.perf_counter()
    for batch in make_loader(benchmark, indices, batch_size, workers):
        images = [torch.from_numpy(image).to(device, non_blocking=True) for image, _, _ in batch]
        pixels = center_crop_batch(images, settings["resize_short_side"], image_size)
        features, _ = model.encode_image(pixels)
        logits = F.normalize(features.float(), dim=-1) @ embeddings.t()
        accuracy.update(logits, torch.tensor([target for _, target, _ in batch], device=device))
        bar.update(min(len(batch) * world_size, total - bar.n))
    accuracy.all_reduce()
    seconds = time.perf_counter() - start
    bar.close()
    return DatasetResult(
        dataset=benchmark.name,
        task="classification",
        num_images=total,
        seconds=seconds,
        metrics=accuracy.scores(),
        settings=settings,
        classes=list(benchmark.classes),
    )
