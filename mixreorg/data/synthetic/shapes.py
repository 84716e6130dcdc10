"""The shapes world: named outlines (circle, star, ...) on textured backgrounds, with captions.

Every pixel of a scene belongs to one shape or one background class, so each training image has an exact
label map, and the evaluation split is a small segmentation benchmark. Colour says little about the class:
object colours are drawn independently of the shape (and include the backgrounds' own colours), objects carry
stripes, dots or checks, and lighting varies per image, so clustering colours does not segment a scene.
Classes defined by outline are the hard case for a small ViT (benchmarks/results/shape_probe_cpu.md); the
appearance world (appearance.py) is the one the tiny models learn.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

from mixreorg.data.synthetic.backgrounds import (
    BACKGROUNDS,
    BG_NOUNS,
    draw_backgrounds,
    grid,
    jitter,
    scene_meta,
    where_phrase,
)

SHAPES = ("circle", "square", "triangle", "star", "heart", "ring", "cross", "diamond", "hexagon", "crescent")
CLASSES = SHAPES + BACKGROUNDS
_CLASS_IDS = {name: index for index, name in enumerate(CLASSES)}
# Display colours for label maps (not the objects' colours).
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128),
)
COLOURS = {
    "red": (200, 40, 40), "orange": (236, 128, 32), "yellow": (236, 208, 52), "green": (64, 160, 64),
    "blue": (48, 88, 200), "purple": (128, 60, 168), "pink": (236, 132, 180), "brown": (128, 84, 44),
    "white": (240, 240, 240), "black": (32, 32, 32), "grey": (128, 128, 128),
}
PATTERNS = ("plain", "striped", "dotted", "checkered")
# An object never takes the colour its background is named for; it would only be visible by its pattern.
_CLASHES = {
    "sand": {"yellow"}, "grass": {"green"}, "water": {"blue"}, "sky": {"blue", "white"},
    "brick": {"red", "brown", "orange"}, "wood": {"brown", "orange"}, "snow": {"white", "grey"}, "gravel": {"grey"},
}
_STAR_RADII = [1.0 if k % 2 == 0 else 0.45 for k in range(10)]
_CROSS = [(-0.32, -1), (0.32, -1), (0.32, -0.32), (1, -0.32), (1, 0.32), (0.32, 0.32),
          (0.32, 1), (-0.32, 1), (-0.32, 0.32), (-1, 0.32), (-1, -0.32), (-0.32, -0.32)]
_POLYGONS = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -1.05), (0.91, 0.52), (-0.91, 0.52)],
    "diamond": [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)],
    "hexagon": [(0.95 * np.sin(a), -0.95 * np.cos(a)) for a in np.arange(6) * np.pi / 3],
    "star": [(r * np.sin(k * np.pi / 5), -r * np.cos(k * np.pi / 5)) for k, r in enumerate(_STAR_RADII)],
    "cross": [(x * 0.95, y * 0.95) for x, y in _CROSS],
}

_PATTERN_WITH = {
    "striped": ("stripes",), "dotted": ("dots", "polka dots"), "checkered": ("a checkered pattern", "checks"),
}
_COUNTS = {2: "two", 3: "three"}


def _shape_mask(kind: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    if kind in _POLYGONS:
        points = [(cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)) for x, y in _POLYGONS[kind]]
        canvas = Image.new("1", (size, size), 0)
        ImageDraw.Draw(canvas).polygon(points, fill=1)
        return np.asarray(canvas, dtype=bool)
    yy, xx = grid(size)
    dx, dy = (xx - cx) / radius, (yy - cy) / radius
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    r2 = u * u + v * v
    if kind == "circle":
        return r2 <= 0.81
    if kind == "ring":
        return (r2 <= 0.9) & (r2 >= 0.3)
    if kind == "heart":
        x, y = 1.2 * u, -1.2 * v + 0.25
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    if kind == "crescent":
        return (r2 <= 0.9) & ((u - 0.45) ** 2 + (v + 0.12) ** 2 > 0.55)
    raise ValueError(f"unknown shape {kind}")


def _pattern_tone(pattern: str, rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
    """For the pixels (ys, xs): True where the pattern's second tone goes (stripes, checks or dots)."""
    if pattern == "plain":
        return np.zeros(len(ys), bool)
    angle, period = rng.uniform(0, np.pi), rng.uniform(7, 12) * size / 96.0
    y, x = ys + 0.5, xs + 0.5
    a = (x * np.cos(angle) + y * np.sin(angle)) / period
    b = (-x * np.sin(angle) + y * np.cos(angle)) / period
    if pattern == "striped":
        return a % 1.0 < 0.5
    if pattern == "checkered":
        return (np.floor(a) + np.floor(b)) % 2 == 0
    fa, fb = a % 1.0 - 0.5, b % 1.0 - 0.5
    return fa * fa + fb * fb < 0.09  # dotted


def _paint_object(image: np.ndarray, mask: np.ndarray, colour: str, pattern: str, rng: np.random.Generator) -> None:
    ys, xs = np.nonzero(mask)
    base = jitter(rng, COLOURS[colour], 12)
    second = base + (255 - base) * 0.55 if base.mean() < 110 else base * 0.45
    tone = _pattern_tone(pattern, rng, ys, xs, image.shape[0])
    fill = np.where(tone[:, None], second, base)
    image[ys, xs] = fill + rng.normal(0.0, 5.0, fill.shape).astype(np.float32)


def _place_objects(
    rng: np.random.Generator, size: int, count: int, shapes: tuple[str, ...]
) -> list[tuple[np.ndarray, str]]:
    """Masks for up to ``count`` shapes whose mutual occlusion stays under 20% of each one's area."""
    placed: list[tuple[np.ndarray, str]] = []
    high = 0.55 if count < 3 else 0.42
    for _ in range(count):
        kind = shapes[rng.integers(len(shapes))]
        for _attempt in range(20):
            radius = rng.uniform(0.25, high) * size / 2
            cx, cy = rng.uniform(0.85 * radius, size - 0.85 * radius, 2)
            mask = _shape_mask(kind, size, cx, cy, radius, rng.uniform(-0.45, 0.45))
            area = int(mask.sum())
            if area == 0:
                continue
            overlaps = [int((mask & other).sum()) for other, _ in placed]
            fits = all(o <= 0.2 * other.sum() for o, (other, _) in zip(overlaps, placed, strict=True))
            if fits and sum(overlaps) <= 0.2 * area:
                placed.append((mask, kind))
                break
    return placed


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _describe(obj: dict, pick: random.Random) -> str:
    colour, pattern, shape = obj["colour"], obj["pattern"], obj["shape"]
    words = [colour] if pick.random() < 0.9 else []
    if pattern == "plain":
        if pick.random() < 0.15:
            words.insert(0, pick.choice(("plain", "solid")))
        phrase = " ".join([*words, shape])
    elif pick.random() < 0.5:
        phrase = " ".join([pattern, *words, shape]) if pick.random() < 0.5 else " ".join([*words, pattern, shape])
    elif pick.random() < 0.8:
        phrase = " ".join([*words, shape]) + " with " + pick.choice(_PATTERN_WITH[pattern])
    else:
        phrase = " ".join([*words, shape])
    return f"{_article(phrase)} {phrase}"


def _caption(objects: list[dict], backgrounds: list[str], pick: random.Random) -> str:
    parts = [_describe(obj, pick) for obj in pick.sample(objects, len(objects))]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    lower = backgrounds[-1]
    where = where_phrase(backgrounds, pick)
    frame = pick.randrange(6)
    if frame == 0 and len(objects) > 1:
        text = f"{_COUNTS[len(objects)]} {pick.choice(('shapes', 'objects'))}: {listed} {where}"
    elif frame == 1:
        text = f"{pick.choice(('a photo of', 'photo of', 'an image of', 'a picture of'))} {listed} {where}"
    elif frame == 2:
        text = f"there {'is' if len(objects) == 1 else 'are'} {listed} {where}"
    elif frame == 3 and len(backgrounds) == 1:
        text = f"{pick.choice(BG_NOUNS[lower])} with {listed}"
    else:
        text = f"{listed} {where}"
    return text.strip()


def render_scene(
    rng: np.random.Generator,
    image_size: int = 96,
    shapes: tuple[str, ...] = SHAPES,
    patterns: tuple[str, ...] = PATTERNS,
) -> tuple[Image.Image, np.ndarray, str, dict]:
    """One scene: (RGB image, uint8 label map of class indices, caption, metadata of what was drawn).

    ``shapes`` and ``patterns`` narrow what objects may be (the corpus uses all; the shape probe asks whether
    fewer, plainer shapes are learned sooner).
    """
    return draw_scene(rng, image_size, shapes, patterns)[:4]


def draw_scene(
    rng: np.random.Generator,
    image_size: int = 96,
    shapes: tuple[str, ...] = SHAPES,
    patterns: tuple[str, ...] = PATTERNS,
) -> tuple[Image.Image, np.ndarray, str, dict, np.ndarray]:
    """``render_scene``'s outputs and the int16 instance map (0 background, object k at k, in ``meta["objects"]``
    order), from the same draws."""
    if not shapes or not set(shapes) <= set(SHAPES) or not patterns or not set(patterns) <= set(PATTERNS):
        raise ValueError(f"shapes must come from {SHAPES} and patterns from {PATTERNS}")
    size = image_size
    image, labels, backgrounds = draw_backgrounds(rng, size, _CLASS_IDS)
    instances = np.zeros((size, size), np.int16)
    clashes = set().union(*(_CLASHES[b] for b in backgrounds))
    colours = [c for c in COLOURS if c not in clashes]
    objects = []
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    for number, (mask, kind) in enumerate(_place_objects(rng, size, count, shapes), 1):
        colour, pattern = colours[rng.integers(len(colours))], patterns[rng.integers(len(patterns))]
        _paint_object(image, mask, colour, pattern, rng)
        labels[mask], instances[mask] = CLASSES.index(kind), number
        objects.append({"shape": kind, "colour": colour, "pattern": pattern, "class_id": CLASSES.index(kind)})
    image *= rng.uniform(0.85, 1.15)  # lighting: the same named colour changes value from image to image
    meta = scene_meta(objects, backgrounds, labels, instances, {name: i for i, name in enumerate(CLASSES)})
    caption = _caption(objects, backgrounds, random.Random(int(rng.integers(2**62))))
    meta["caption"] = caption
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), labels, caption, meta, instances


