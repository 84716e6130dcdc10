"""Label colours for masks and pictures.

A label's colour follows from its name alone (a hash picks the hue), so "cat" looks the same in every picture
whatever the other labels and their order; only when two names of one label set would come out alike does the
later name (alphabetically) move on to its next candidate. When every label belongs to one benchmark (VOC,
Cityscapes, PASCAL Context, COCO, ADE20K, or our synthetic set) that benchmark's own palette is used, so
pictures match the figures people know. The background of a background threshold is black.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib

import numpy as np

BACKGROUND_COLOR = (0, 0, 0)
# Smallest class lists first: a label set that fits VOC uses VOC's palette rather than COCO's.
PALETTE_BENCHMARKS = (
    ("voc", "voc"), ("cityscapes", "cityscapes"), ("context", "context"), ("coco", "coco-object"),
    ("ade20k", "ade20k"), ("coco", "coco-stuff"),
)  # fmt: skip
_MIN_DISTANCE = 90.0  # RGB distance under which two colours of one picture count as alike


def name_color(name: str, attempt: int = 0) -> tuple[int, int, int]:
    """A bright, saturated colour derived from ``name`` (and ``attempt``, for the next candidate)."""
    digest = hashlib.sha256(f"{name.casefold()}#{attempt}".encode()).digest()
    hue = int.from_bytes(digest[:4], "big") / 2**32
    saturation = 0.55 + 0.4 * digest[4] / 255
    value = 0.75 + 0.23 * digest[5] / 255
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(255 * red), round(255 * green), round(255 * blue)


@functools.cache
def benchmark_palettes() -> tuple[tuple[str, dict[str, tuple[int, int, int]]], ...]:
    """(benchmark, {casefolded class name: colour}) for every benchmark with a published palette."""
    from mixreorg.data import synthetic
    from mixreorg.data.benchmarks.manifest import benchmark_spec

    found = []
    for dataset, benchmark in PALETTE_BENCHMARKS:
        spec = benchmark_spec(dataset, benchmark)
        if len(spec.palette) == len(spec.classes):
            found.append((benchmark, dict(zip((c.casefold() for c in spec.classes), spec.palette, strict=True))))
    found.append(("synthetic", dict(zip(synthetic.CLASSES, synthetic.PALETTE, strict=True))))
    return tuple(found)


def palette_for(labels: list[str]) -> tuple[str, dict[str, tuple[int, int, int]]] | None:
    """The first benchmark whose classes include every label, with its palette; None when none does."""
    keys = {label.casefold() for label in labels}
    for benchmark, colors in benchmark_palettes():
        if keys <= colors.keys():
            return benchmark, colors
    return None


def _distinct_color(label: str, taken: list[np.ndarray], attempts: int = 64) -> tuple[int, int, int]:
    """The label's first candidate colour far enough from ``taken``, else the candidate farthest from them."""
    best, best_distance = name_color(label), -1.0
    for attempt in range(attempts):
        color = name_color(label, attempt)
        distance = min((float(np.linalg.norm(np.array(color, dtype=float) - other)) for other in taken), default=1e9)
        if distance >= _MIN_DISTANCE:
            return color
        if distance > best_distance:
            best, best_distance = color, distance
    return best


def label_colors(labels: list[str], background_first: bool = False) -> np.ndarray:
    """[len(labels), 3] uint8: the colour of each label index (index 0 black when ``background_first``)."""
    named = labels[1:] if background_first else labels
    colors: dict[str, tuple[int, int, int]] = {}
    benchmark = palette_for(named)
    if benchmark is not None:
        colors = {label: tuple(benchmark[1][label.casefold()]) for label in named}
    else:
        taken = [np.array(BACKGROUND_COLOR, dtype=float)] if background_first else []
        for label in sorted(named, key=str.casefold):  # order-free: the result does not depend on list order
            colors[label] = _distinct_color(label, taken)
            taken.append(np.array(colors[label], dtype=float))
    rows = ([BACKGROUND_COLOR] if background_first else []) + [colors[label] for label in named]
    return np.array(rows, dtype=np.uint8).reshape(len(labels), 3)
