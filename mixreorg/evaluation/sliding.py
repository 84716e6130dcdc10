"""Batched sliding-window inference with overlap averaging, keep-ratio resizing, multi-scale and flip.

Follows mmseg 0.18 ``EncoderDecoder`` (spec 5.2): windows of ``crop`` every ``stride`` pixels, the last
window shifted back inside the image, logits summed and divided by the overlap count, then resized
bilinearly to the original size. Windows of several images that share a shape run in one forward pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

CropFn = Callable[[Tensor], Tensor]  # [N, 3, h, w] normalised crops -> [N, K, h, w] scores


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Window offsets along one axis: grids = max(L - crop + stride - 1, 0) // stride + 1, last one shifted in."""
    if length <= crop:
        return [0]
    count = (length - crop + stride - 1) // stride + 1
    return [min(i * stride, length - crop) for i in range(count)]


@dataclass(frozen=True)
class Window:
    image: int
    top: int
    left: int
    height: int
    width: int


def plan_windows(sizes: Sequence[tuple[int, int]], crop: int, stride: int) -> list[Window]:
    windows = []
    for index, (height, width) in enumerate(sizes):
        h, w = min(crop, height), min(crop, width)
        for top in window_starts(height, crop, stride):
            for left in window_starts(width, crop, stride):
                windows.append(Window(index, top, left, h, w))
    return windows


@torch.no_grad()
def slide(images: Sequence[Tensor], crop_fn: CropFn, crop: int, stride: int, batch_size: int) -> list[Tensor]:
    """[3, h, w] images (sizes may differ) -> averaged [K, h, w] window scores for each image."""
    windows = plan_windows([tuple(image.shape[-2:]) for image in images], crop, stride)
    by_shape: dict[tuple[int, int], list[Window]] = defaultdict(list)
    for window in windows:
        by_shape[(window.height, window.width)].append(window)
    sums: list[Tensor | None] = [None] * len(images)
    counts = [torch.zeros(image.shape[-2:], device=image.device) for image in images]
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            crops = torch.stack(
                [images[w.image][:, w.top : w.top + w.height, w.left : w.left + w.width] for w in chunk]
            )
            scores = crop_fn(crops).float()
            for window, score in zip(chunk, scores, strict=True):
                total = sums[window.image]
                if total is None:
                    height, width = images[window.image].shape[-2:]
                    total = sums[window.image] = score.new_zeros(score.shape[0], height, width)
                rows = slice(window.top, window.top + window.height)
                cols = slice(window.left, window.left + window.width)
                total[:, rows, cols] += score
                counts[window.image][rows, cols] += 1
    return [total / count for total, count in zip(sums, counts, strict=True)]  # type: ignore[operator]


def rescale_size(height: int, width: int, short_side: float, long_side: float) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: the largest size with short edge <= short_side and long edge <= long_side."""
    scale = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def prepare(image: Tensor, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """[H, W, 3] uint8 (any device) -> [3, h, w] float, resized bilinearly (no antialias, as cv2) and normalised.

    mmseg resizes the uint8 image and rounds before normalising; we keep the float result (sub-level
    differences only).
    """
    x = image.permute(2, 0, 1).float().unsqueeze(0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean_t) / std_t)[0]


def resize_rows(scores: Tensor, size: tuple[int, int], rows: slice) -> Tensor:
    """Rows ``rows`` of ``F.interpolate(scores[None], size, bilinear, align_corners=False)[0]``, computed
    without materialising the other rows (same source-index rule as PyTorch: clamp at 0, edge reuse)."""
    in_height = scores.shape[-2]
    out = torch.arange(rows.start, rows.stop, device=scores.device, dtype=torch.float64)
    source = ((out + 0.5) * (in_height / size[0]) - 0.5).clamp(min=0)
    top = source.floor().long().clamp(max=in_height - 1)
    bottom = (top + 1).clamp(max=in_height - 1)
    weight = (source - top).to(scores.dtype).view(1, -1, 1)
    blended = scores[:, top] * (1 - weight) + scores[:, bottom] * weight  # [K, n, w]
    if blended.shape[-1] == size[1]:
        return blended
    # Same row count in and out, so this pass only interpolates along the width.
    widened = F.interpolate(blended[None], size=(blended.shape[1], size[1]), mode="bilinear", align_corners=False)
    return widened[0]


def resize_argmax(scores: Tensor, size: tuple[int, int], max_elements: int = 1 << 26) -> Tensor:
    """argmax over K of the bilinearly resized [K, h, w] scores, at most ``max_elements`` floats at a time."""
    # max().indices rather than argmax(): same first-index rule, ~10x faster over dim 0 on CPU
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores.max(dim=0).indices
    rows_per_chunk = max(1, max_elements // max(1, scores.shape[0] * size[1]))
    labels = torch.empty(size, dtype=torch.long, device=scores.device)
    for start in range(0, size[0], rows_per_chunk):
        chunk = slice(start, min(size[0], start + rows_per_chunk))
        labels[chunk] = resize_rows(scores, size, chunk).max(dim=0).indices
    return labels


@dataclass(frozen=True)
class SlideSettings:
    short_side: int
    long_side: int
    crop: int
    stride: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    batch_size: int = 8


def prepare_images(images: Sequence[Tensor], settings: SlideSettings, ratio: float = 1.0) -> list[Tensor]:
    """[H, W, 3] uint8 images -> [3, h, w] normalised inputs at the protocol's keep-ratio size times ``ratio``."""
    return [
        prepare(
            image,
            rescale_size(*image.shape[:2], settings.short_side * ratio, settings.long_side * ratio),
            settings.mean,
            settings.std,
        )
        for image in images
    ]


@torch.no_grad()
def score_images(
    images: Sequence[Tensor], crop_fn: CropFn, settings: SlideSettings, ratio: float = 1.0, flipped: bool = False,
    return_inputs: bool = False,
) -> list[Tensor] | tuple[list[Tensor], list[Tensor]]:
    """[H, W, 3] uint8 images -> [K, h, w] window-averaged scores at each one's working size (the protocol's
    keep-ratio resize times ``ratio``; mirrored when ``flipped``). Windows of equal shape share forward passes.
    ``return_inputs`` also returns the normalised [3, h, w] inputs (mirrored too), which PAMR follows."""
    resized = prepare_images(images, settings, ratio)
    inputs = [x.flip(-1) for x in resized] if flipped else resized
    scores = slide(inputs, crop_fn, settings.crop, settings.stride, settings.batch_size)
    return (scores, inputs) if return_inputs else scores


@torch.no_grad()
def segment_images(images: Sequence[Tensor], crop_fn: CropFn, settings: SlideSettings, readout=None) -> list[Tensor]:
    """[H, W, 3] uint8 images -> [H, W] label maps at each image's own size.

    ``readout`` (``mixreorg.evaluation.readout``; default: the windows' scores are the labels') turns the window-
    averaged scores into labels. Single scale without flip: its ``label_map`` (for the default: resize -> argmax, no
    softmax needed, it keeps the argmax). Otherwise, as mmseg's aug_test: per scale and flip, the readout's
    probabilities at the original size, flipped back, averaged, then its decision.
    """
    from mixreorg.evaluation.readout import WindowReadout

    readout = readout or WindowReadout()
    originals = [tuple(image.shape[:2]) for image in images]
    augmented = len(settings.scales) > 1 or settings.flip
    averaged: list[Tensor | None] = [None] * len(images)
    for ratio in settings.scales:
        for flipped in (False, True) if settings.flip else (False,):
            scores, inputs = score_images(images, crop_fn, settings, ratio, flipped, return_inputs=True)
            if not augmented:
                return [readout.label_map(s, x, size) for s, x, size in zip(scores, inputs, originals, strict=True)]
            for index, (score, x, size) in enumerate(zip(scores, inputs, originals, strict=True)):
                probs = readout.probabilities(score, x, size)
                probs = probs.flip(-1) if flipped else probs
                averaged[index] = probs if averaged[index] is None else averaged[index] + probs
    count = len(settings.scales) * (2 if settings.flip else 1)  # a mean: thresholds compare probabilities
    return [readout.decide(total / count) for total in averaged]  # type: ignore[operator]
