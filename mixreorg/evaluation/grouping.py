"""How well a segmentation's segments follow the true regions, whatever they are named.

mIoU mixes two questions: are the segments in the right places, and are they named right. This measure
answers the first alone. For every class region of an image (all pixels of that class, ignored pixels left
out) it takes the IoU of the one segment that overlaps the region best. A model that puts the whole image in
one segment scores each region's share of the image; one whose segments trace every region scores 1.
"""

from __future__ import annotations

import numpy as np


def best_segment_iou(segments: np.ndarray, label: np.ndarray, ignore_index: int = 255) -> dict[int, float]:
    """{class id: IoU of its best-matching segment} for each class present in ``label``.

    ``segments`` and ``label`` are [H, W] integer maps of the same shape; segment ids need not be contiguous.
    """
    if segments.shape != label.shape:
        raise ValueError(f"segments {segments.shape} and label {label.shape} differ in shape")
    valid = label != ignore_index
    _, segment_ids = np.unique(segments[valid], return_inverse=True)
    classes, class_ids = np.unique(label[valid], return_inverse=True)
    if len(classes) == 0:
        return {}
    count = int(segment_ids.max()) + 1
    # joint[c, s]: pixels of class c in segment s
    joint = np.bincount(class_ids * count + segment_ids, minlength=len(classes) * count).reshape(len(classes), count)
    union = joint.sum(axis=1, keepdims=True) + joint.sum(axis=0, keepdims=True) - joint
    best = (joint / union).max(axis=1)
    return {int(c): float(iou) for c, iou in zip(classes, best, strict=True)}


def segment_count(segments: np.ndarray, label: np.ndarray, ignore_index: int = 255) -> int:
    """How many distinct segments cover the labelled pixels."""
    return len(np.unique(segments[label != ignore_index]))
