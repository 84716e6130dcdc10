"""The grouping side of the learning benchmark: do a model's segments follow the objects, names aside?

For each synthetic evaluation image the model's segments are the pixels' winning group (the same winner the
`groupvit` protocol labels), computed on the whole image resized to the protocol's scale (short side 2x the
model's size, position embeddings interpolated; no sliding windows, so one image has one set of groups).
Scored with mixreorg.evaluation.grouping: segments per image, and each true region's best-segment IoU,
objects (animals or shapes, whichever the world draws) and backgrounds apart. Two floors: one segment per image,
and k-means on pixel colours. One probe of why segments merge: the mean cosine similarity of object and
background patch tokens where stage 1 ends.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mixreorg.evaluation.grouping import best_segment_iou, segment_count

FIGURE_IMAGES = 6


def kmeans_colours(image: np.ndarray, clusters: int, rng: np.random.Generator, rounds: int = 10) -> np.ndarray:
    """[H, W] cluster index of each pixel after ``rounds`` of Lloyd's k-means on RGB."""
    pixels = image.reshape(-1, 3).astype(np.float32)
    centres = pixels[rng.choice(len(pixels), clusters, replace=False)]
    for _ in range(rounds):
        assign = ((pixels[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.stack(
            [pixels[assign == k].mean(0) if (assign == k).any() else centres[k] for k in range(clusters)]
        )
    return assign.reshape(image.shape[:2])


def model_view(model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For an [H, W, 3] uint8 image at the protocol's scale: the [H, W] winning segment of each pixel, and the
    [h, w, D] patch tokens as they enter the first grouping block (the end of stage 1)."""
    import torch
    import torch.nn.functional as F

    from mixreorg.evaluation.protocols import IMAGENET_MEAN, IMAGENET_STD
    from mixreorg.evaluation.sliding import prepare
    from mixreorg.inference.dense import segment_attention
    from mixreorg.model.grouping import GroupingBlock

    height, width = image.shape[:2]
    scale = 2 * model.cfg.vision.image_size / min(height, width)
    size = (round(height * scale), round(width * scale))
    pixels = prepare(torch.as_tensor(np.array(image)), size, IMAGENET_MEAN, IMAGENET_STD)[None]  # a writable copy
    pixels = pixels.to(next(model.parameters()).device)
    first_grouping = next(module for module in model.modules() if isinstance(module, GroupingBlock))
    seen = {}
    hook = first_grouping.register_forward_hook(lambda module, inputs, output: seen.update(tokens=inputs[0]))
    try:
        with torch.no_grad():
            out = model.image_encoder(pixels)
    finally:
        hook.remove()
    winner = segment_attention(out, size).max(dim=1).indices.float()[None]  # [1, 1, h, w]
    segments = F.interpolate(winner, size=(height, width), mode="nearest")[0, 0].long().cpu().numpy()
    tokens = seen["tokens"][0].float().reshape(*out.grid, -1).cpu().numpy()
    return segments, tokens


def object_background_cosine(tokens: np.ndarray, label: np.ndarray, object_ids: set[int]) -> float | None:
    """Mean cosine similarity between the tokens of object patches and of background patches (patch classes
    from the label map sampled at the token grid); None when the image has no patch of either."""
    rows = (np.arange(tokens.shape[0]) + 0.5) * label.shape[0] / tokens.shape[0]
    columns = (np.arange(tokens.shape[1]) + 0.5) * label.shape[1] / tokens.shape[1]
    patch_classes = label[rows.astype(int)][:, columns.astype(int)]
    is_object = np.isin(patch_classes, list(object_ids))
    unit = tokens / np.linalg.norm(tokens, axis=-1, keepdims=True)
    objects, background = unit[is_object], unit[~is_object]
    if len(objects) == 0 or len(background) == 0:
        return None
    return float((objects @ background.T).mean())


def _score(pairs, object_ids: set[int]) -> dict:
    """Segments per image and best-segment IoU of object and background regions, over (segments, label) pairs."""
    counts, objects, backgrounds = [], [], []
    for segments, label in pairs:
        counts.append(segment_count(segments, label))
        for class_id, iou in best_segment_iou(segments, label).items():
            (objects if class_id in object_ids else backgrounds).append(iou)
    return {
        "segments_per_image": statistics.fmean(counts),
        "object_region_iou": 100 * statistics.fmean(objects),
        "background_region_iou": 100 * statistics.fmean(backgrounds),
    }


def object_ids(benchmark) -> set[int]:
    """The synthetic set's object classes (every class that is not one of the shared backgrounds)."""
    from mixreorg.data.synthetic import BACKGROUNDS

    return {index for index, name in enumerate(benchmark.classes) if name not in BACKGROUNDS}


def grouping(model, benchmark) -> dict:
    """The grouping measure of one model, plus how alike its object and background tokens are at the end of
    stage 1 (alike tokens end up in one group)."""
    model.eval()
    ids = object_ids(benchmark)
    pairs, cosines = [], []
    for image, label, _ in benchmark:
        segments, tokens = model_view(model, image)
        pairs.append((segments, label))
        cosine = object_background_cosine(tokens, label, ids)
        if cosine is not None:
            cosines.append(cosine)
    return {**_score(pairs, ids), "object_background_cosine": statistics.fmean(cosines)}


def grouping_floors(benchmark, clusters: int = 4, seed: int = 0) -> dict:
    """The measure for one segment per image and for per-image colour k-means."""
    rng = np.random.default_rng(seed)
    ids = object_ids(benchmark)
    items = [(image, label) for image, label, _ in benchmark]
    one = ((np.zeros_like(label, dtype=np.int64), label) for _, label in items)
    colour = ((kmeans_colours(image, clusters, rng), label) for image, label in items)
    return {"one_segment": _score(one, ids), "colour_kmeans": _score(colour, ids)}


def segments_of(model) -> Callable[[np.ndarray], np.ndarray]:
    """A GroupViT/MixReorg model as a picture -> [H, W] segment-index map (its winning segment per pixel)."""
    return lambda image: model_view(model, image)[0]


def group_figure(views: dict[str, Callable[[np.ndarray], np.ndarray]], benchmark, path: Path) -> None:
    """A grid: evaluation images, their true regions, and each view's segments (random colours per segment); a view
    maps a picture to an [H, W] map of segment indices."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = ["image", "true regions", *views]
    rows = min(FIGURE_IMAGES, len(benchmark))
    fig = Figure(figsize=(1.8 * len(columns), 1.8 * rows))
    FigureCanvasAgg(fig)
    segment_colours = np.random.default_rng(0).integers(40, 255, (256, 3)).astype(np.uint8)
    for row in range(rows):
        image, label, _ = benchmark[row]
        panels = [image, np.asarray(benchmark.palette, np.uint8)[label]]
        panels += [segment_colours[view(image) % 256] for view in views.values()]
        for column, panel in enumerate(panels):
            axis = fig.add_subplot(rows, len(columns), row * len(columns) + column + 1)
            axis.imshow(panel, interpolation="nearest")
            axis.set_axis_off()
            if row == 0:
                axis.set_title(columns[column], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
