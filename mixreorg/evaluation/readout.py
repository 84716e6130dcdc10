"""From window-averaged scores to labels: what a protocol does after the sliding window, at the image's own size.

``WindowReadout`` (groupvit, unified): the windows already give each label's score; resize and take the best.
``SoftmaxReadout`` (sclip): the windows give each name's cosine similarity. At the original size (after PAMR when
asked): probabilities = softmax(logit_scale x cosine) over all names, a label takes its best name's probability,
labels that win too little of the foreground are dropped (SCLIP's area threshold on VOC21), and a pixel where no
label reaches the threshold becomes background (label 0). Both serve ``eval`` and ``Predictor`` alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mixreorg.evaluation.pamr import pamr
from mixreorg.evaluation.protocols import Protocol
from mixreorg.evaluation.sliding import resize_argmax


def resize(scores: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]


class WindowReadout:
    """The windows' scores are the labels' scores (background, if any, is channel 0 already)."""

    def pointwise(self, scores: Tensor) -> Tensor:
        return scores

    def label_scores(self, scores: Tensor, image: Tensor | None, size: tuple[int, int]) -> Tensor:
        return resize(scores, size)

    def probabilities(self, scores: Tensor, image: Tensor | None, size: tuple[int, int]) -> Tensor:
        """What multi-scale and flip average (mmseg's aug_test): the softmax of the resized scores."""
        return resize(scores, size).softmax(dim=0)

    def decide(self, label_scores: Tensor) -> Tensor:
        return label_scores.max(dim=0).indices  # max().indices: argmax's first-index rule, faster over dim 0 on CPU

    def label_map(self, scores: Tensor, image: Tensor | None, size: tuple[int, int]) -> Tensor:
        return resize_argmax(scores, size)  # a few rows at a time: no [labels, H, W] tensor for large photos


class SoftmaxReadout:
    """SCLIP's post-processing. ``owners[q]`` is the label of name q; ``background``: "none", "named" (label 0 has
    names of its own, as VOC21's stuff words) or "added" (label 0 is added, scored by the threshold only)."""

    def __init__(self, owners: Sequence[int], logit_scale: float, background: str = "none",
                 threshold: float | None = None, area_threshold: float | None = None,
                 pamr_steps: int = 0, pamr_dilations: Sequence[int] = ()) -> None:
        if background not in ("none", "named", "added"):
            raise ValueError(f"background must be none, named or added, got {background!r}")
        self.owners = torch.as_tensor(list(owners), dtype=torch.long)
        self.offset = 1 if background == "added" else 0
        self.num_labels = int(self.owners.max()) + 1 + self.offset
        self.logit_scale = float(logit_scale)
        self.threshold = threshold if background != "none" else None
        self.area_threshold = area_threshold if background != "none" else None
        self.pamr_steps, self.pamr_dilations = pamr_steps, tuple(pamr_dilations)

    def probabilities(self, scores: Tensor, image: Tensor | None, size: tuple[int, int]) -> Tensor:
        """What multi-scale and flip average: the label probabilities at the original size (before thresholds)."""
        return self.name_probabilities(self.refine(scores, image, size))

    def name_probabilities(self, scores: Tensor) -> Tensor:
        """[Q, ...] name cosines -> [L, ...] label probabilities (each label's best name)."""
        probs = (self.logit_scale * scores.float()).softmax(dim=0)
        owners = self.owners.to(probs.device).view(-1, *([1] * (probs.dim() - 1))).expand_as(probs)
        labels = probs.new_zeros(self.num_labels, *probs.shape[1:])
        return labels.scatter_reduce(0, owners + self.offset, probs, reduce="amax", include_self=True)

    def with_background(self, probs: Tensor) -> Tensor:
        """Label 0 raised to the threshold where no label reaches it, so that the argmax is the decision."""
        if self.threshold is None:
            return probs
        below = probs.max(dim=0).values < self.threshold
        probs = probs.clone()
        probs[0] = torch.where(below, torch.full_like(probs[0], self.threshold), probs[0])
        return probs

    def pointwise(self, scores: Tensor) -> Tensor:
        return self.with_background(self.name_probabilities(scores))

    def refine(self, scores: Tensor, image: Tensor | None, size: tuple[int, int]) -> Tensor:
        """Name scores at the original size, refined along the image's edges when PAMR is on (NACLIP's order:
        resize the scores and the working image to the original size, then PAMR)."""
        full = resize(scores.float(), size)
        if self.pamr_steps and image is not None:
            full = pamr(resize(image.float(), size), full, self.pamr_steps, self.pamr_dilations)
        return full

    def label_scores(self, scores: Tensor, image: Tensor | None, size: tuple[int, int]) -> Tensor:
        return self.pointwise(self.refine(scores, image, size))

    def decide(self, probs: Tensor) -> Tensor:
        """[L, H, W] label probabilities -> [H, W] labels: area threshold, background threshold, argmax."""
        if self.area_threshold is not None:
            winners = probs.max(dim=0).indices
            area = torch.bincount(winners.flatten(), minlength=probs.shape[0])[1:].float()
            keep = area > self.area_threshold * area.sum()
            probs = probs.clone()
            probs[1:] *= keep.to(probs.dtype).view(-1, 1, 1)
        return self.with_background(probs).max(dim=0).indices

    def label_map(self, scores: Tensor, image: Tensor | None, size: tuple[int, int]) -> Tensor:
        return self.decide(self.probabilities(scores, image, size))


def make_readout(protocol: Protocol, groups: Sequence[Sequence[str]], added_background: bool = False):
    """The readout of ``protocol`` for labels ``groups`` (each a tuple of names; with background="probability",
    label 0 is background: named by ``groups[0]``, or added when ``added_background``)."""
    if protocol.readout == "window":
        return WindowReadout()
    owners = [index for index, group in enumerate(groups) for _ in group]
    background = "none" if protocol.background == "none" else ("added" if added_background else "named")
    return SoftmaxReadout(owners, protocol.logit_scale or 1.0, background, protocol.background_score,
                          protocol.area_threshold, protocol.pamr_steps if protocol.pamr else 0,
                          protocol.pamr_dilations)
