"""Sliding windows, resizing, protocols and the segmentation runner (with an oracle and with a real model)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixreorg.data.benchmarks import get_benchmark_spec
from mixreorg.evaluation.protocols import IMAGENET_MEAN, IMAGENET_STD, UNIFIED_BACKGROUND_SCORE, resolve_protocol
from mixreorg.evaluation.segmentation import evaluate_segmentation
from mixreorg.evaluation.sliding import (
    SlideSettings,
    plan_windows,
    rescale_size,
    resize_argmax,
    segment_images,
    slide,
    window_starts,
)
from mixreorg.evaluation.zero_shot import crop_scorer
from mixreorg.inference.dense import dense_logits, with_background
from mixreorg.inference.prompts import class_embeddings


@pytest.mark.parametrize("length,crop,stride", [(597, 448, 224), (448, 448, 224), (1000, 448, 224), (300, 448, 224),
                                                (129, 64, 32), (65, 64, 32)])
def test_window_starts_follow_the_mmseg_grid(length, crop, stride):
    starts = window_starts(length, crop, stride)
    assert len(starts) == max(length - crop + stride - 1, 0) // stride + 1
    size = min(crop, length)
    covered = np.zeros(length, dtype=bool)
    for start in starts:
        assert 0 <= start and start + size <= length  # shifted inside, never padded
        covered[start : start + size] = True
    assert covered.all() and starts[-1] + size == length


def test_slide_averages_overlaps_exactly_and_batches_across_images():
    torch.manual_seed(0)
    images = [torch.randn(3, 70, 150), torch.randn(3, 64, 64), torch.randn(3, 40, 100)]
    calls = []

    def identity(crops):
        calls.append(crops.shape[0])
        return crops * 2.0

    for batch_size in (1, 5):
        calls.clear()
        results = slide(images, identity, crop=64, stride=32, batch_size=batch_size)
        for image, result in zip(images, results, strict=True):
            torch.testing.assert_close(result, image * 2.0)
        assert sum(calls) == len(plan_windows([(70, 150), (64, 64), (40, 100)], 64, 32))
        assert max(calls) <= batch_size


def test_rescale_size_is_mmcv_keep_ratio():
    assert rescale_size(375, 500, 448, 2048) == (448, 597)
    assert rescale_size(500, 375, 448, 2048) == (597, 448)
    assert rescale_size(100, 5000, 448, 2048) == (41, 2048)  # the long side cap wins
    assert rescale_size(96, 96, 128, 512) == (128, 128)


def test_chunked_resize_argmax_equals_full_interpolation():
    torch.manual_seed(1)
    scores = torch.randn(5, 23, 31)
    for size in [(100, 77), (9, 13), (23, 80)]:
        expected = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0].argmax(0)
        assert torch.equal(resize_argmax(scores, size, max_elements=300), expected)


def test_protocols_resolve_published_settings():
    voc = get_benchmark_spec("voc")
    groupvit = resolve_protocol("groupvit", "voc", True, 224, published_threshold=voc.protocol["bg_thresh"])
    assert (groupvit.short_side, groupvit.crop, groupvit.stride) == (448, 448, 224)
    assert (groupvit.background, groupvit.background_score) == ("threshold", 0.95)
    assert groupvit.templates == ("a photo of a {}.",)
    context = get_benchmark_spec("context")
    assert resolve_protocol("groupvit", "context", True, 224,
                            published_threshold=context.protocol["bg_thresh"]).background_score == 0.35
    unified = resolve_protocol("unified", "voc", True, 224, multi_scale=True, flip=True)
    assert (unified.background, unified.background_score) == ("constant", UNIFIED_BACKGROUND_SCORE)
    assert len(unified.templates) == 9 and unified.scales[0] == 0.5 and unified.flip
    assert resolve_protocol("unified", "ade20k", False, 224).background == "none"
    synthetic = resolve_protocol("groupvit", "synthetic", False, 64)
    assert (synthetic.short_side, synthetic.crop, synthetic.stride) == (128, 64, 32)


class ArrayBenchmark:
    """A tiny in-memory benchmark: images whose red channel encodes the class (10 x class)."""

    def __init__(self, labels: list[np.ndarray], classes: list[str], has_background: bool = False):
        self.name = "oracle"
        self.classes = classes
        self.has_background = has_background
        self.object_classes = ()
        self.ignore_index = 255
        self.protocol = {}
        self.items = []
        for i, label in enumerate(labels):
            image = np.zeros((*label.shape, 3), dtype=np.uint8)
            image[..., 0] = np.where(label == 255, 0, label * 10)
            self.items.append((image, label.astype(np.uint8), f"img{i}"))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _oracle(num_classes: int):
    """Scores that read the class back from the (normalised) red channel of each crop."""

    def score(crops):
        red = crops[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        classes = (red / 10).round().long().clamp(0, num_classes - 1)
        return F.one_hot(classes, num_classes).permute(0, 3, 1, 2).float()

    return score


def _block_labels(rng, shape, num_classes, block=8):
    coarse = rng.integers(0, num_classes, size=(shape[0] // block + 1, shape[1] // block + 1))
    label = np.kron(coarse, np.ones((block, block), dtype=np.int64))[: shape[0], : shape[1]]
    label[rng.random(shape) < 0.05] = 255
    return label


@pytest.mark.parametrize("multi_scale,flip", [(False, False), (False, True), (True, True)])
def test_a_predictor_returning_the_ground_truth_scores_100(multi_scale, flip):
    """Exactly 100 at one scale (with or without flip); across scales, resampling blurs block edges a little,
    while a misaligned flip or scale would cost far more than the 2 points allowed."""
    rng = np.random.default_rng(0)
    labels = [_block_labels(rng, shape, 6) for shape in [(64, 96), (80, 64), (64, 64), (64, 150)]]
    benchmark = ArrayBenchmark(labels, [f"class{i}" for i in range(6)])
    # Short side 64 = every image's own: the protocol resizes nothing, so the oracle is exact.
    protocol = dataclasses.replace(resolve_protocol("groupvit", "synthetic", False, 32, multi_scale, flip),
                                   short_side=64)
    if multi_scale:  # ratios that keep the 8-pixel blocks on whole pixels
        protocol = dataclasses.replace(protocol, scales=(0.5, 1.0, 2.0))
    result = evaluate_segmentation(None, benchmark, protocol, torch.device("cpu"), batch_size=3, workers=0,
                                   scorer=_oracle(6), progress=False)
    assert result.num_images == 4
    if multi_scale:
        assert result.metrics["miou"] > 98.0 and result.metrics["pixel_accuracy"] > 99.0
        return
    assert result.metrics["miou"] == pytest.approx(100.0)
    assert result.metrics["pixel_accuracy"] == pytest.approx(100.0)
    assert all(v == pytest.approx(100.0) for v in result.metrics["per_class_iou"].values() if v is not None)


def test_a_wrong_predictor_scores_below_100():
    rng = np.random.default_rng(1)
    labels = [_block_labels(rng, (64, 64), 4) for _ in range(2)]
    benchmark = ArrayBenchmark(labels, ["a", "b", "c", "d"])
    protocol = dataclasses.replace(resolve_protocol("groupvit", "synthetic", False, 32), short_side=64)
    oracle = _oracle(4)
    result = evaluate_segmentation(None, benchmark, protocol, torch.device("cpu"), workers=0, progress=False,
                                   scorer=lambda crops: oracle(crops).roll(1, dims=1))
    assert result.metrics["miou"] == pytest.approx(0.0)


def test_crop_scorer_background_rules(tiny_model):
    tiny_model.eval()
    torch.manual_seed(0)
    crops = torch.randn(2, 3, 64, 64)
    embeddings = class_embeddings(tiny_model, ["cat", "dog", "sky"])
    plain = dense_logits(tiny_model, crops, embeddings)
    constant = crop_scorer(tiny_model, embeddings, "constant", 0.5)(crops)
    assert constant.shape == (2, 4, 64, 64)
    assert torch.all(constant[:, 0] == 0.5) and torch.allclose(constant[:, 1:], plain.logits)
    threshold = crop_scorer(tiny_model, embeddings, "threshold", 0.9)(crops)
    assert torch.equal(threshold, with_background(plain.logits, 0.9, plain.segment_logits))


def test_real_model_through_the_pipeline_gives_valid_maps(tiny_model):
    tiny_model.eval()
    rng = np.random.default_rng(2)
    shapes = [(90, 120), (50, 40)]
    images = [torch.from_numpy(rng.integers(0, 255, size=shape + (3,), dtype=np.uint8)) for shape in shapes]
    embeddings = class_embeddings(tiny_model, ["cat", "dog", "sky"])
    scorer = crop_scorer(tiny_model, embeddings, "threshold", 0.6)
    settings = SlideSettings(short_side=96, long_side=512, crop=64, stride=32, mean=IMAGENET_MEAN,
                             std=IMAGENET_STD, scales=(0.75, 1.0), flip=True, batch_size=4)
    maps = segment_images(images, scorer, settings)
    assert [tuple(m.shape) for m in maps] == [(90, 120), (50, 40)]
    assert all(int(m.min()) >= 0 and int(m.max()) <= 3 for m in maps)
