"""The appearance world: animals known by their coats (stripes, spots, patches) on random outlines.

An object class here is a texture-and-colour family with variation inside the class (stripe period, angle and
wobble, spot size and spacing, hue), drawn on a random blob, so a patch of fur names its class: what a small
ViT can learn from captions in minutes, where outlines (the shapes world) are not learned at all
(benchmarks/results/shape_probe_cpu.md). Several animals per scene, on the same eight backgrounds as the shapes
world. Captions name them as web captions name things: sometimes with an attribute ("a young zebra"), counts
for repeats ("two tigers"), the place usually but not always, and now and then one animal left out.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from mixreorg.data.synthetic.backgrounds import (
    BACKGROUNDS,
    BG_NOUNS,
    draw_backgrounds,
    grid,
    scene_meta,
    where_phrase,
)

ANIMALS = ("zebra", "tiger", "leopard", "dalmatian", "ladybug", "giraffe")
CLASSES = ANIMALS + BACKGROUNDS
PALETTE = (
    (230, 25, 75), (245, 130, 48), (255, 225, 25), (0, 130, 200), (145, 30, 180), (70, 240, 240),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128),
    (60, 180, 75), (240, 50, 230),
)
_CLASS_IDS = {name: index for index, name in enumerate(CLASSES)}
# An animal is not put on a background its coat disappears into.
_CLASHES = {"dalmatian": {"snow"}, "giraffe": {"sand", "wood"}, "leopard": {"sand"}, "tiger": {"wood"}}
_ADJECTIVES = {
    "zebra": ("striped", "black and white", "young", "big", "small"),
    "tiger": ("striped", "orange", "big", "young", "small"),
    "leopard": ("spotted", "golden", "big", "young", "small"),
    "dalmatian": ("spotted", "white", "young", "small", "playful"),
    "ladybug": ("red", "spotted", "little", "tiny"),
    "giraffe": ("tall", "brown", "young", "patterned"),
}
_COUNTS = {2: "two", 3: "three"}
# How many animals a scene draws (1, 2, 3) and their radius as a fraction of half the image side (a scene of
# three draws smaller ones). Chosen for the tiny models: with radii of 0.3-0.55 tiny GroupViT named almost no
# animal (objects IoU 6-9), with 0.5-0.85 its segments followed the animals better but named them worse
# (benchmarks/README.md, "the appearance world").
COUNT_PROBABILITIES = (0.4, 0.45, 0.15)
RADIUS = (0.4, 0.7)
RADIUS_OF_THREE = (0.35, 0.5)


def _rgb(rng: np.random.Generator, low, high) -> np.ndarray:
    return rng.uniform(np.asarray(low, np.float32), np.asarray(high, np.float32)).astype(np.float32)


def _rotate(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    angle = rng.uniform(0, np.pi)
    y, x = ys + 0.5, xs + 0.5
    return x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)


def _stripes(rng, ys, xs, s: float, period: tuple[float, float], duty: tuple[float, float], wobble: float):
    """True on the dark stripes: wavy bands of a random angle, period and width."""
    u, v = _rotate(rng, ys, xs)
    length = rng.uniform(14, 30) * s
    u = u + rng.uniform(0.3, 1.0) * wobble * s * np.sin(2 * np.pi * v / length + rng.uniform(0, 2 * np.pi))
    return (u / (rng.uniform(*period) * s)) % 1.0 < rng.uniform(*duty)


def _cells(rng, ys, xs, spacing: float):
    """Cells of side ``spacing`` on rotated axes: each pixel's position inside its cell (0..1), the cell's
    index (from 0) and the grid's shape."""
    u, v = _rotate(rng, ys, xs)
    u, v = u / spacing, v / spacing
    i, j = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - i, v - j
    i, j = i - i.min(initial=0), j - j.min(initial=0)
    return fu, fv, i, j, (i.max(initial=0) + 1, j.max(initial=0) + 1)


def _spots(rng, ys, xs, s: float, spacing: tuple[float, float], radius: tuple[float, float], empty: float):
    """Distance to the own cell's spot centre, in spot radii (< 1 inside a spot); some cells have no spot."""
    fu, fv, i, j, shape = _cells(rng, ys, xs, rng.uniform(*spacing) * s)
    radii = rng.uniform(*radius, shape)
    cy, cx = rng.uniform(radii, 1 - radii), rng.uniform(radii, 1 - radii)
    radii = np.where(rng.random(shape) < empty, 1e-3, radii)
    return np.hypot(fu - cx[i, j], fv - cy[i, j]) / radii[i, j]


def _patch_lines(rng, ys, xs, s: float) -> np.ndarray:
    """True on the pale lines between a giraffe's patches: where a pixel is nearly as close to two cell points."""
    fu, fv, i, j, shape = _cells(rng, ys, xs, rng.uniform(8, 12) * s)
    padded = (shape[0] + 2, shape[1] + 2)
    py, px = rng.uniform(0.15, 0.85, padded), rng.uniform(0.15, 0.85, padded)
    distances = [
        np.hypot(fu - (di + px[i + 1 + di, j + 1 + dj]), fv - (dj + py[i + 1 + di, j + 1 + dj]))
        for di in (-1, 0, 1)
        for dj in (-1, 0, 1)
    ]
    nearest = np.sort(np.stack(distances), axis=0)
    return nearest[1] - nearest[0] < rng.uniform(0.09, 0.15)


def coat(name: str, rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
    """[n, 3] float colours of the pixels (ys, xs) of one animal of class ``name``."""
    s = size / 96.0  # coats scale with the image, as backgrounds do
    black = _rgb(rng, (18, 16, 14), (48, 42, 36))
    if name == "zebra":
        dark = _stripes(rng, ys, xs, s, (6, 10), (0.4, 0.55), 1.5)
        colours = np.where(dark[:, None], black, _rgb(rng, (222, 222, 214), (250, 250, 246)))
    elif name == "tiger":
        dark = _stripes(rng, ys, xs, s, (7, 12), (0.2, 0.34), 3.0)
        colours = np.where(dark[:, None], black, _rgb(rng, (212, 98, 18), (250, 152, 58)))
    elif name == "leopard":
        base = _rgb(rng, (192, 146, 66), (228, 184, 108))
        distance = _spots(rng, ys, xs, s, (6, 8), (0.28, 0.4), 0.05)
        ring = (distance < 1) & (distance > rng.uniform(0.45, 0.6))
        colours = np.where(ring[:, None], _rgb(rng, (52, 34, 18), (84, 56, 30)), base)
        colours = np.where((distance <= 0.6)[:, None] & ~ring[:, None], base * 0.8, colours)
    elif name == "dalmatian":
        distance = _spots(rng, ys, xs, s, (8, 12), (0.15, 0.35), 0.3)
        colours = np.where((distance < 1)[:, None], black, _rgb(rng, (228, 228, 222), (250, 250, 248)))
    elif name == "ladybug":
        distance = _spots(rng, ys, xs, s, (9, 13), (0.25, 0.33), 0.1)
        colours = np.where((distance < 1)[:, None], black, _rgb(rng, (186, 18, 16), (228, 56, 40)))
    elif name == "giraffe":
        lines = _patch_lines(rng, ys, xs, s)
        colours = np.where(lines[:, None], _rgb(rng, (226, 210, 166), (244, 232, 196)), _rgb(rng, (148, 82, 32),
                                                                                            (188, 120, 58)))
    else:
        raise ValueError(f"unknown animal {name}")
    return colours + rng.normal(0.0, 5.0, colours.shape).astype(np.float32)


def blob_mask(rng: np.random.Generator, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """A random outline: a stretched, rotated disc whose radius wobbles with a few low harmonics."""
    yy, xx = grid(size)
    angle, stretch = rng.uniform(0, np.pi), rng.uniform(0.75, 1.3)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / stretch
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) * stretch
    theta = np.arctan2(v, u)
    edge = np.ones_like(theta)
    for harmonic in (2, 3, 4):
        edge += rng.uniform(-0.12, 0.12) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) <= radius * edge


def _place(rng: np.random.Generator, size: int, count: int, animals: list[str]) -> list[tuple[np.ndarray, str]]:
    """Masks for up to ``count`` animals whose mutual occlusion stays under 20% of each one's area."""
    placed: list[tuple[np.ndarray, str]] = []
    low, high = RADIUS if count < 3 else RADIUS_OF_THREE
    for _ in range(count):
        name = animals[rng.integers(len(animals))]
        for _attempt in range(20):
            radius = rng.uniform(low, high) * size / 2
            cx, cy = rng.uniform(0.8 * radius, size - 0.8 * radius, 2)
            mask = blob_mask(rng, size, cx, cy, radius)
            area = int(mask.sum())
            overlaps = [int((mask & other).sum()) for other, _ in placed]
            fits = all(o <= 0.2 * other.sum() for o, (other, _) in zip(overlaps, placed, strict=True))
            if area and fits and sum(overlaps) <= 0.2 * area:
                placed.append((mask, name))
                break
    return placed


def _mention(name: str, count: int, pick: random.Random) -> str:
    if count > 1:
        return f"{_COUNTS[count]} {name}s"
    words = [pick.choice(_ADJECTIVES[name]), name] if pick.random() < 0.35 else [name]
    phrase = " ".join(words)
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def caption(objects: list[dict], backgrounds: list[str], pick: random.Random) -> str:
    """A web-style caption: the animals (with counts), usually where they are; sometimes one left out."""
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj["name"]] = counts.get(obj["name"], 0) + 1
    names = pick.sample(sorted(counts), len(counts))
    if len(names) > 1 and pick.random() < 0.15:
        names.pop()
    parts = [_mention(name, counts[name], pick) for name in names]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    where = where_phrase(backgrounds, pick)
    frame = pick.randrange(6)
    if frame == 0 and len(names) > 1 and len(names) == len(objects):
        text = f"{_COUNTS[len(objects)]} animals: {listed} {where}"
    elif frame == 1:
        text = f"{pick.choice(('a photo of', 'photo of', 'an image of', 'a picture of'))} {listed} {where}"
    elif frame == 2:
        plural = len(objects) > 1
        text = f"there {'are' if plural else 'is'} {listed} {where}"
    elif frame == 3 and len(backgrounds) == 1:
        text = f"{pick.choice(BG_NOUNS[backgrounds[0]])} with {listed}"
    else:
        text = f"{listed} {where}"
    return text.strip()


def render_scene(rng: np.random.Generator, image_size: int = 96) -> tuple[Image.Image, np.ndarray, str, dict]:
    """One scene: (RGB image, uint8 label map of class indices, caption, metadata of what was drawn)."""
    return draw_scene(rng, image_size)[:4]


def draw_scene(rng: np.random.Generator, image_size: int = 96) -> tuple[Image.Image, np.ndarray, str, dict, np.ndarray]:
    """``render_scene``'s outputs and the int16 instance map (0 background, object k at k, in ``meta["objects"]``
    order), from the same draws."""
    size = image_size
    image, labels, backgrounds = draw_backgrounds(rng, size, _CLASS_IDS)
    animals = [name for name in ANIMALS if not _CLASHES.get(name, set()) & set(backgrounds)]
    instances = np.zeros((size, size), np.int16)
    objects = []
    count = int(rng.choice([1, 2, 3], p=COUNT_PROBABILITIES))
    for number, (mask, name) in enumerate(_place(rng, size, count, animals), 1):
        ys, xs = np.nonzero(mask)
        image[ys, xs] = coat(name, rng, ys, xs, size)
        labels[mask], instances[mask] = _CLASS_IDS[name], number
        objects.append({"name": name, "class_id": _CLASS_IDS[name]})
    image *= rng.uniform(0.85, 1.15)  # lighting
    meta = scene_meta(objects, backgrounds, labels, instances, _CLASS_IDS)
    meta["caption"] = caption(objects, backgrounds, random.Random(int(rng.integers(2**62))))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), labels, meta["caption"], meta, instances
