"""Promptable segmentation: points and boxes from the command line or Python, checked against the image, and the
masks they ask for as a ``Segmentation`` (one label per prompt, "background" where no prompt's mask is).

Points are ``x,y`` and boxes ``x1,y1,x2,y2`` in pixels of the image as stored (x to the right, y down), several
joined with ``;``. Only models with a promptable decoder (Unpair-Seg checkpoints) take them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mixreorg.errors import MixreorgError
from mixreorg.inference.inputs import BACKGROUND
from mixreorg.inference.result import Segmentation


class PromptOutside(MixreorgError):
    """A prompt that does not lie inside the image it is given for."""


Point = tuple[float, float]
Box = tuple[float, float, float, float]


def _numbers(text: str, count: int, flag: str, example: str) -> list[tuple[float, ...]]:
    items = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        try:
            values = tuple(float(v) for v in part.split(","))
        except ValueError:
            values = ()
        if len(values) != count or not all(np.isfinite(values)):
            raise MixreorgError(f"{flag} '{part}' is not {count} numbers; write {flag} '{example}' (pixels, several "
                                "joined with ;)")
        items.append(values)
    if not items:
        raise MixreorgError(f"{flag} names no prompt; write {flag} '{example}'")
    return items


def parse_points(text: str) -> list[Point]:
    return _numbers(text, 2, "--points", "120,80;300,210")


def parse_boxes(text: str) -> list[Box]:
    return _numbers(text, 4, "--boxes", "40,30,200,180")


def prompt_tensors(points: Sequence[Point], boxes: Sequence[Box],
                   size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """([K, 4] boxes, [K] kinds, K names) for the prompts on an image of ``size`` (height, width); a prompt outside
    the image is refused."""
    from mixreorg.unpairseg.prompts import BOX, POINT

    height, width = size
    rows, kinds, names = [], [], []
    for x, y in points:
        if not (0 <= x <= width and 0 <= y <= height):
            raise PromptOutside(f"point ({x:g}, {y:g}) lies outside the {width}x{height} image; points are pixel "
                                "coordinates inside it (x to the right, y down)")
        rows.append((x, y, x, y))
        kinds.append(POINT)
        names.append(f"point {x:g},{y:g}")
    for x1, y1, x2, y2 in boxes:
        inside = 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        if not inside:
            raise PromptOutside(f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not a box inside the {width}x{height} image; "
                                "give x1,y1,x2,y2 with x1 < x2 and y1 < y2 in its pixels")
        rows.append((x1, y1, x2, y2))
        kinds.append(BOX)
        names.append(f"box {x1:g},{y1:g},{x2:g},{y2:g}")
    if not rows:
        raise MixreorgError("no prompt given; pass points=[(x, y)] or boxes=[(x1, y1, x2, y2)] (--points/--boxes)")
    return torch.tensor(rows, dtype=torch.float32), torch.tensor(kinds, dtype=torch.long), names


def prompt_segmentation(backend, rgb: np.ndarray, points: Sequence[Point], boxes: Sequence[Box],
                        label_names: list[str], label_embeddings: torch.Tensor | None) -> Segmentation:
    """The prompts' masks on ``rgb``: label 0 is background, label k the k-th prompt ("point x,y", with its best
    label when labels are set: "point x,y: cat"); a pixel goes to the prompt whose mask is likeliest there, if
    above one half. Scores are the predicted IoUs; ``probs`` holds every prompt's full mask probabilities."""
    if not hasattr(backend, "prompt_masks"):
        raise MixreorgError("points and boxes need a promptable model (an Unpair-Seg checkpoint); this one segments "
                            "by labels only")
    boxes_t, kinds, names = prompt_tensors(points, boxes, rgb.shape[:2])
    probs, ious, regions = backend.prompt_masks(rgb, boxes_t, kinds)
    if label_embeddings is not None:
        best = (regions.float() @ label_embeddings.to(regions.device).float().t()).argmax(dim=1).tolist()
        names = [f"{name}: {label_names[i]}" for name, i in zip(names, best, strict=True)]
    stacked = torch.cat([torch.full_like(probs[:1], 0.5), probs]).cpu()
    label_map = stacked.max(dim=0).indices.numpy()
    scores = np.concatenate([[0.0], ious.cpu().numpy()]).astype(np.float32)
    return Segmentation(
        label_map=label_map.astype(np.uint8 if len(names) < 256 else np.uint16),
        labels=[BACKGROUND, *names],
        scores=scores,
        label_scores=scores,
        has_background=True,
        image=rgb,
        probs=stacked.numpy(),
        settings={"prompts": [{"name": n, "box": [float(v) for v in b], "predicted_iou": float(s)}
                              for n, b, s in zip(names, boxes_t.tolist(), scores[1:], strict=True)]},
    )
