"""The synthetic corpus: procedurally drawn scenes of named shapes on named textured backgrounds, with captions.

Every pixel of a scene belongs to one shape or one background class, so each training image has an exact
label map, and the evaluation split is a small segmentation benchmark. Colour says little about the class:
object colours are drawn independently of the shape (and include the backgrounds' own colours), objects carry
stripes, dots or checks, and lighting varies per image, so clustering colours does not segment a scene.
Each sample is drawn from its own seed sequence (seed, split, index): output is byte-identical for a seed.
"""

from __future__ import annotations

import functools
import io
import json
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mixreorg.data.shards import atomic_output_dir, write_shards
from mixreorg.data.verify import write_manifest
from mixreorg.errors import MixreorgError
from mixreorg.utils.progress import progress_bar

SHAPES = ("circle", "square", "triangle", "star", "heart", "ring", "cross", "diamond", "hexagon", "crescent")
BACKGROUNDS = ("sand", "grass", "water", "sky", "brick", "wood", "snow", "gravel")
CLASSES = SHAPES + BACKGROUNDS
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
_HORIZONS = (
    ("sky", "sand"), ("sky", "grass"), ("sky", "water"), ("sky", "snow"), ("brick", "wood"), ("brick", "gravel"),
)
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

_BG_PHRASES = {
    "sand": ("on sand", "on the sand", "lying on sand", "in the sand"),
    "grass": ("on grass", "on the grass", "lying on grass", "in the grass"),
    "water": ("in the water", "on water", "floating on water", "floating in the water"),
    "sky": ("in the sky", "against the sky", "against a clear sky", "up in the sky"),
    "brick": ("on a brick wall", "against a brick wall", "in front of a brick wall", "on brick"),
    "wood": ("on wood", "on a wood table", "on the wood", "lying on wood"),
    "snow": ("in the snow", "on snow", "lying in the snow", "on the snow"),
    "gravel": ("on gravel", "on the gravel", "lying on gravel", "on a gravel path"),
}
_BG_NOUNS = {
    "sand": ("sand", "the sand"), "grass": ("grass", "a field of grass"), "water": ("water", "calm water"),
    "sky": ("the sky", "a blue sky"), "brick": ("a brick wall", "brick"), "wood": ("wood", "a wood surface"),
    "snow": ("snow", "fresh snow"), "gravel": ("gravel", "a patch of gravel"),
}
_UPPER_PHRASES = {
    "sky": ("under the sky", "below a blue sky", "with the sky behind"),
    "brick": ("in front of a brick wall", "by a brick wall", "with a brick wall behind"),
}
_PATTERN_WITH = {
    "striped": ("stripes",), "dotted": ("dots", "polka dots"), "checkered": ("a checkered pattern", "checks"),
}
_COUNTS = {2: "two", 3: "three"}


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), shared and read-only."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _jitter(rng: np.random.Generator, rgb, amount: float = 14.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def _background(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A [size, size, 3] float texture for one background class."""
    yy, xx = _grid(size)
    s = size / 96.0  # texture scales with the image so a class looks alike at every size
    noise = rng.normal(0.0, 1.0, (size, size, 1)).astype(np.float32)
    if name == "sand":
        angle, period = rng.uniform(0, np.pi), rng.uniform(9, 15) * s
        ripple = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + 2 * np.sin(yy / (7 * s)))
        return _jitter(rng, (222, 196, 140)) + 10 * ripple[..., None] + 13 * noise
    if name == "grass":
        step = max(2, round(6 * s))
        blades = np.repeat(rng.normal(0, 1, (size // step + 1, size)), step, axis=0)[:size, :, None]
        blades = blades.astype(np.float32)
        return _jitter(rng, (72, 140, 52)) * (1 + 0.2 * blades + 0.08 * noise)
    if name == "water":
        period, phase = rng.uniform(8, 13) * s, rng.uniform(0, 2 * np.pi)
        waves = np.sin(2 * np.pi * (yy + 3 * s * np.sin(2 * np.pi * xx / (size / 3) + phase)) / period)
        return _jitter(rng, (38, 98, 178)) + 60 * np.clip(waves, 0, 1)[..., None] ** 4 + 6 * noise
    if name == "sky":
        t = (yy / size)[..., None]
        image = _jitter(rng, (80, 140, 225)) * (1 - t) + _jitter(rng, (175, 210, 245)) * t
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(0, size, 2)
            rx, ry = rng.uniform(0.12, 0.3) * size, rng.uniform(0.05, 0.12) * size
            alpha = np.clip(1.4 - ((xx - cx) / rx) ** 2 - ((yy - cy) / ry) ** 2, 0, 1)[..., None]
            image = image * (1 - alpha) + 245 * alpha
        return image + 3 * noise
    if name == "brick":
        h = rng.uniform(10, 14) * s
        w, mortar = 2 * h, max(1.0, 1.6 * s)
        row = np.floor(yy / h).astype(int)
        shifted = xx + (row % 2) * w / 2
        col = np.floor(shifted / w).astype(int)
        shade = rng.uniform(0.8, 1.15, (row.max() + 1, col.max() + 1)).astype(np.float32)[row, col][..., None]
        joint = ((yy % h) < mortar) | ((shifted % w) < mortar)
        image = _jitter(rng, (160, 70, 50)) * shade + 8 * noise
        return np.where(joint[..., None], _jitter(rng, (190, 186, 176), 8) + 5 * noise, image)
    if name == "wood":
        period, phase, tilt = rng.uniform(5, 9) * s, rng.uniform(0, 2 * np.pi), rng.uniform(-0.15, 0.15)
        along = xx + tilt * yy + 4 * s * np.sin(2 * np.pi * yy / (size / 2) + phase)
        grain = np.sin(2 * np.pi * along / period)[..., None]
        return _jitter(rng, (150, 98, 55)) * (1 + 0.14 * grain) + 5 * noise
    if name == "snow":
        drift = np.sin(2 * np.pi * (xx + rng.uniform(0, size)) / (size * 0.7)) * np.sin(2 * np.pi * yy / (size * 0.9))
        return _jitter(rng, (236, 240, 248), 6) + np.array([-9, -6, 0], np.float32) * drift[..., None] + 4 * noise
    if name == "gravel":
        canvas = Image.new("RGB", (size, size), tuple(int(v) for v in _jitter(rng, (110, 106, 100))))
        draw = ImageDraw.Draw(canvas)
        count = int((size / (4.5 * s)) ** 2)
        centres, radii = rng.uniform(0, size, (count, 2)), rng.uniform(1.8, 3.6, (count, 1)) * s
        boxes = np.concatenate([centres - radii * [1, 0.8], centres + radii * [1, 0.8]], axis=1).tolist()
        fills = np.clip(rng.uniform(85, 195, (count, 1)) + rng.uniform(-8, 8, (count, 3)), 0, 255).astype(int)
        for box, fill in zip(boxes, map(tuple, fills.tolist()), strict=True):
            draw.ellipse(box, fill=fill)
        return np.asarray(canvas, np.float32) + 5 * noise
    raise ValueError(f"unknown background {name}")


def _shape_mask(kind: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    if kind in _POLYGONS:
        points = [(cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos)) for x, y in _POLYGONS[kind]]
        canvas = Image.new("1", (size, size), 0)
        ImageDraw.Draw(canvas).polygon(points, fill=1)
        return np.asarray(canvas, dtype=bool)
    yy, xx = _grid(size)
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
    base = _jitter(rng, COLOURS[colour], 12)
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
    where = pick.choice(_BG_PHRASES[lower])
    if len(backgrounds) == 2:
        where += " " + pick.choice(_UPPER_PHRASES[backgrounds[0]])
    if pick.random() < 0.12:
        where = ""
    frame = pick.randrange(6)
    if frame == 0 and len(objects) > 1:
        text = f"{_COUNTS[len(objects)]} {pick.choice(('shapes', 'objects'))}: {listed} {where}"
    elif frame == 1:
        text = f"{pick.choice(('a photo of', 'photo of', 'an image of', 'a picture of'))} {listed} {where}"
    elif frame == 2:
        text = f"there {'is' if len(objects) == 1 else 'are'} {listed} {where}"
    elif frame == 3 and len(backgrounds) == 1:
        text = f"{pick.choice(_BG_NOUNS[lower])} with {listed}"
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
    if not shapes or not set(shapes) <= set(SHAPES) or not patterns or not set(patterns) <= set(PATTERNS):
        raise ValueError(f"shapes must come from {SHAPES} and patterns from {PATTERNS}")
    size = image_size
    labels = np.empty((size, size), np.uint8)
    if rng.random() < 0.3:
        upper, lower = _HORIZONS[rng.integers(len(_HORIZONS))]
        yy, xx = _grid(size)
        horizon = size * rng.uniform(0.3, 0.55) + size * 0.03 * np.sin(xx / size * rng.uniform(3, 9))
        top = yy < horizon
        image = np.where(top[..., None], _background(upper, rng, size), _background(lower, rng, size))
        backgrounds = [upper, lower]
        labels[:] = np.where(top, CLASSES.index(upper), CLASSES.index(lower))
    else:
        backgrounds = [BACKGROUNDS[rng.integers(len(BACKGROUNDS))]]
        image = _background(backgrounds[0], rng, size)
        labels[:] = CLASSES.index(backgrounds[0])
    image = np.ascontiguousarray(image, dtype=np.float32)
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
    for number, obj in enumerate(objects, 1):
        ys, xs = np.nonzero(instances == number)
        obj["area"] = int(len(ys))
        obj["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    meta = {
        "objects": objects,
        "backgrounds": [
            {"name": b, "class_id": CLASSES.index(b), "area": int((labels == CLASSES.index(b)).sum())}
            for b in backgrounds
        ],
    }
    caption = _caption(objects, backgrounds, random.Random(int(rng.integers(2**62))))
    meta["caption"] = caption
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), labels, caption, meta


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for one sample: independent of every other sample, so any subset can be redrawn."""
    return np.random.default_rng([seed, {"train": 0, "eval": 1}[split], index])


def _train_samples(train_size: int, image_size: int, seed: int, progress):
    for index in range(train_size):
        image, _, caption, meta = render_scene(sample_rng(seed, "train", index), image_size)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        progress.update(1)
        yield {"__key__": f"{index:09d}", "jpg": buffer.getvalue(), "txt": caption, "json": meta}


def generate_corpus(
    out: str | Path,
    train_size: int = 10000,
    eval_size: int = 500,
    image_size: int = 96,
    seed: int = 0,
    shard_size: int = 1000,
) -> dict:
    """Write train shards (+ manifest) and the evaluation set under ``out``, atomically; returns a summary."""
    if train_size < 1 or eval_size < 0 or shard_size < 1:
        raise MixreorgError("--train-size and --shard-size must be at least 1 and --eval-size at least 0")
    if image_size < 32:
        raise MixreorgError(f"--image-size {image_size} is too small to draw recognisable shapes; use 32 or more")
    start = time.perf_counter()
    with (
        atomic_output_dir(out) as tmp,
        progress_bar(total=train_size + eval_size, desc="synth", unit="img") as progress,
    ):
        shards = write_shards(_train_samples(train_size, image_size, seed, progress), tmp / "train", shard_size)
        write_manifest(tmp / "train" / "manifest.json", shards)
        (tmp / "eval" / "images").mkdir(parents=True)
        (tmp / "eval" / "annotations").mkdir()
        for index in range(eval_size):
            image, labels, caption, meta = render_scene(sample_rng(seed, "eval", index), image_size)
            image.save(tmp / "eval" / "images" / f"{index:06d}.png")
            Image.fromarray(labels).save(tmp / "eval" / "annotations" / f"{index:06d}.png")
            progress.update(1)
        classes = {"classes": list(CLASSES), "palette": [list(c) for c in PALETTE], "has_background": False,
                   "ignore_index": 255, "num_images": eval_size}
        (tmp / "eval" / "classes.json").write_text(json.dumps(classes, indent=1) + "\n")
        # The same names one per line: what `mixreorg segment --labels-file` reads.
        (tmp / "eval" / "classes.txt").write_text("\n".join(classes["classes"]) + "\n")
        settings = {"generator": "mixreorg data synth", "seed": seed, "train_size": train_size,
                    "eval_size": eval_size, "image_size": image_size, "shard_size": shard_size}
        (tmp / "synth.json").write_text(json.dumps(settings, indent=1) + "\n")
    seconds = time.perf_counter() - start
    return {"out": str(out), "train_shards": len(shards), "train_samples": train_size, "eval_images": eval_size,
            "seconds": seconds, "images_per_second": (train_size + eval_size) / max(seconds, 1e-9)}
