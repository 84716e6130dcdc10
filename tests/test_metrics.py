"""Confusion-matrix metrics against an independent per-class computation, top-k accuracy, and the grouping measure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mixreorg.evaluation.grouping import best_segment_iou, segment_count
from mixreorg.evaluation.metrics import ConfusionMatrix, TopKAccuracy

IGNORE = 255





def reference_scores(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> tuple[float, float, list]:
    """mIoU / pixel accuracy from boolean masks per class, summed over images (no confusion matrix)."""
    intersections = np.zeros(num_classes)
    unions = np.zeros(num_classes)
    correct = counted = 0
    for prediction, target in pairs:
        valid = target != IGNORE
        for c in range(num_classes):
            pred_c, true_c = (prediction == c) & valid, (target == c) & valid
            intersections[c] += np.logical_and(pred_c, true_c).sum()
            unions[c] += np.logical_or(pred_c, true_c).sum()
        correct += ((prediction == target) & valid).sum()
        counted += valid.sum()
    ious = [i / u if u else None for i, u in zip(intersections, unions, strict=True)]
    present = [v for v in ious if v is not None]
    return 100 * float(np.mean(present)), 100 * correct / counted, ious


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miou_matches_independent_per_class_computation(seed):
    rng = np.random.default_rng(seed)
    num_classes = 7
    pairs = []
    for _ in range(4):
        shape = tuple(rng.integers(5, 40, size=2))
        target = rng.integers(0, num_classes - 1, size=shape)  # the last class never occurs in the ground truth
        target[rng.random(shape) < 0.2] = IGNORE
        prediction = np.where(rng.random(shape) < 0.6, target, rng.integers(0, num_classes, size=shape))
        prediction[prediction == IGNORE] = 0  # a prediction is always a class
        pairs.append((prediction, target))
    matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE)
    for prediction, target in pairs:
        matrix.update(torch.from_numpy(prediction), torch.from_numpy(target.astype(np.uint8)))
    scores = matrix.scores([f"c{i}" for i in range(num_classes)])
    miou, accuracy, ious = reference_scores(pairs, num_classes)
    assert scores.miou == pytest.approx(miou, abs=1e-9)
    assert scores.pixel_accuracy == pytest.approx(accuracy, abs=1e-9)
    for name, expected in zip(scores.per_class_iou, ious, strict=True):
        got = scores.per_class_iou[name]
        assert (got is None) == (expected is None)
        if expected is not None:
            assert got == pytest.approx(100 * expected, abs=1e-9)


def test_class_absent_everywhere_is_left_out_and_false_positives_count_zero():
    matrix = ConfusionMatrix(4)
    target = torch.tensor([[0, 0, 1, IGNORE]])
    prediction = torch.tensor([[0, 2, 1, 3]])  # class 2 predicted but absent; class 3 only on an ignored pixel
    matrix.update(prediction, target)
    scores = matrix.scores()
    assert scores.per_class_iou == {"0": 50.0, "1": 100.0, "2": 0.0, "3": None}
    assert scores.miou == pytest.approx(50.0)
    assert scores.pixel_accuracy == pytest.approx(200 / 3)


def test_labels_outside_the_class_range_are_reported():
    matrix = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="label 7"):
        matrix.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7))


def test_merging_matrices_equals_one_matrix():
    rng = np.random.default_rng(3)
    target = torch.from_numpy(rng.integers(0, 5, size=(2, 30, 30)))
    prediction = torch.from_numpy(rng.integers(0, 5, size=(2, 30, 30)))
    whole, first, second = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(prediction, target)
    first.update(prediction[0], target[0])
    second.update(prediction[1], target[1])
    first.merge(second)
    assert torch.equal(first.counts, whole.counts)


def test_empty_matrix_gives_nan_not_a_crash():
    scores = ConfusionMatrix(3).scores()
    assert math.isnan(scores.miou) and math.isnan(scores.pixel_accuracy)


def test_topk_accuracy():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    accuracy = TopKAccuracy((1, 2))
    accuracy.update(logits, torch.tensor([1, 1, 0]))
    assert accuracy.scores() == {"top1": pytest.approx(100 / 3), "top2": pytest.approx(200 / 3)}


def test_best_segment_iou_scores_each_region_by_its_best_segment():
    label = np.zeros((4, 4), np.uint8)
    label[:2, :2] = 3  # a 4-pixel object on class 0
    label[3, 3] = 255  # ignored
    assert best_segment_iou(label.astype(np.int64) * 7, label) == {0: 1.0, 3: 1.0}  # ids need not be contiguous
    one = np.zeros((4, 4), np.int64)
    assert best_segment_iou(one, label) == pytest.approx({0: 11 / 15, 3: 4 / 15})  # the region's share
    split = one.copy()
    split[:2, 0] = 5  # half the object in its own segment
    assert best_segment_iou(split, label)[3] == pytest.approx(2 / 4)  # the half beats the rest (2 / 15)
    assert best_segment_iou(split, label)[0] == pytest.approx(11 / 13)
    assert segment_count(split, label) == 2
    ignored_only = np.where(label == 255, 9, 0)
    assert segment_count(ignored_only, label) == 1


def test_best_segment_iou_matches_a_direct_count():
    rng = np.random.default_rng(0)
    segments, label = rng.integers(0, 6, (20, 30)), rng.integers(0, 4, (20, 30))
    label[rng.random((20, 30)) < 0.1] = 255
    valid = label != 255
    expected = {
        c: max(((label == c) & (segments == s) & valid).sum() / (((label == c) | (segments == s)) & valid).sum()
               for s in range(6))
        for c in range(4)
    }
    assert best_segment_iou(segments, label) == pytest.approx(expected)
