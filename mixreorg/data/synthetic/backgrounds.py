"""What every synthetic world shares: eight textured backgrounds, horizons, the phrases naming them, and the
scene record (areas and boxes) written beside each picture."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

BACKGROUNDS = ("sand", "grass", "water", "sky", "brick", "wood", "snow", "gravel")

HORIZONS = (
    ("sky", "sand"), ("sky", "grass"), ("sky", "water"), ("sky", "snow"), ("brick", "wood"), ("brick", "gravel"),
)

BG_PHRASES = {
    "sand": ("on sand", "on the sand", "lying on sand", "in the sand"),
    "grass": ("on grass", "on the grass", "lying on grass", "in the grass"),
    "water": ("in the water", "on water", "floating on water", "floating in the water"),
    "sky": ("in the sky", "against the sky", "against a clear sky", "up in the sky"),
    "brick": ("on a brick wall", "against a brick wall", "in front of a brick wall", "on brick"),
    "wood": ("on wood", "on a wood table", "on the wood", "lying on wood"),
    "snow": ("in the snow", "on snow", "lying in the snow", "on the snow"),
    "gravel": ("on gravel", "on the gravel", "lying on gravel", "on a gravel path"),
}
BG_NOUNS = {
    "sand": ("sand", "the sand"), "grass": ("grass", "a field of grass"), "water": ("water", "calm water"),
    "sky": ("the sky", "a blue sky"), "brick": ("a brick wall", "brick"), "wood": ("wood", "a wood surface"),
    "snow": ("snow", "fresh snow"), "gravel": ("gravel", "a patch of gravel"),
}
UPPER_PHRASES = {
    "sky": ("under the sky", "below a blue sky", "with the sky behind"),
    "brick": ("in front of a brick wall", "by a brick wall", "with a brick wall behind"),
}


@functools.lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), shared and read-only."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def jitter(rng: np.random.Generator, rgb, amount: float = 14.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def background_texture(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A [size, size, 3] float texture for one background class."""
    yy, xx = grid(size)
    s = size / 96.0  # texture scales with the image so a class looks alike at every size
    noise = rng.normal(0.0, 1.0, (size, size, 1)).astype(np.float32)
    if name == "sand":
        angle, period = rng.uniform(0, np.pi), rng.uniform(9, 15) * s
        ripple = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + 2 * np.sin(yy / (7 * s)))
        return jitter(rng, (222, 196, 140)) + 10 * ripple[..., None] + 13 * noise
    if name == "grass":
        step = max(2, round(6 * s))
        blades = np.repeat(rng.normal(0, 1, (size // step + 1, size)), step, axis=0)[:size, :, None]
        blades = blades.astype(np.float32)
        return jitter(rng, (72, 140, 52)) * (1 + 0.2 * blades + 0.08 * noise)
    if name == "water":
        period, phase = rng.uniform(8, 13) * s, rng.uniform(0, 2 * np.pi)
        waves = np.sin(2 * np.pi * (yy + 3 * s * np.sin(2 * np.pi * xx / (size / 3) + phase)) / period)
        return jitter(rng, (38, 98, 178)) + 60 * np.clip(waves, 0, 1)[..., None] ** 4 + 6 * noise
    if name == "sky":
        t = (yy / size)[..., None]
        image = jitter(rng, (80, 140, 225)) * (1 - t) + jitter(rng, (175, 210, 245)) * t
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
        image = jitter(rng, (160, 70, 50)) * shade + 8 * noise
        return np.where(joint[..., None], jitter(rng, (190, 186, 176), 8) + 5 * noise, image)
    if name == "wood":
        period, phase, tilt = rng.uniform(5, 9) * s, rng.uniform(0, 2 * np.pi), rng.uniform(-0.15, 0.15)
        along = xx + tilt * yy + 4 * s * np.sin(2 * np.pi * yy / (size / 2) + phase)
        grain = np.sin(2 * np.pi * along / period)[..., None]
        return jitter(rng, (150, 98, 55)) * (1 + 0.14 * grain) + 5 * noise
    if name == "snow":
        drift = np.sin(2 * np.pi * (xx + rng.uniform(0, size)) / (size * 0.7)) * np.sin(2 * np.pi * yy / (size * 0.9))
        return jitter(rng, (236, 240, 248), 6) + np.array([-9, -6, 0], np.float32) * drift[..., None] + 4 * noise
    if name == "gravel":
        canvas = Image.new("RGB", (size, size), tuple(int(v) for v in jitter(rng, (110, 106, 100))))
        draw = ImageDraw.Draw(canvas)
        count = int((size / (4.5 * s)) ** 2)
        centres, radii = rng.uniform(0, size, (count, 2)), rng.uniform(1.8, 3.6, (count, 1)) * s
        boxes = np.concatenate([centres - radii * [1, 0.8], centres + radii * [1, 0.8]], axis=1).tolist()
        fills = np.clip(rng.uniform(85, 195, (count, 1)) + rng.uniform(-8, 8, (count, 3)), 0, 255).astype(int)
        for box, fill in zip(boxes, map(tuple, fills.tolist()), strict=True):
            draw.ellipse(box, fill=fill)
        return np.asarray(canvas, np.float32) + 5 * noise
    raise ValueError(f"unknown background {name}")


def draw_backgrounds(
    rng: np.random.Generator, size: int, class_ids: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A scene's backdrop: one background, or (30%) an upper and a lower one split by a wavy horizon.

    Returns the float [size, size, 3] image, the uint8 label map (``class_ids`` names each background's index)
    and the backgrounds drawn, upper first.
    """
    labels = np.empty((size, size), np.uint8)
    if rng.random() < 0.3:
        upper, lower = HORIZONS[rng.integers(len(HORIZONS))]
        yy, xx = grid(size)
        horizon = size * rng.uniform(0.3, 0.55) + size * 0.03 * np.sin(xx / size * rng.uniform(3, 9))
        top = yy < horizon
        image = np.where(top[..., None], background_texture(upper, rng, size), background_texture(lower, rng, size))
        labels[:] = np.where(top, class_ids[upper], class_ids[lower])
        return np.ascontiguousarray(image, dtype=np.float32), labels, [upper, lower]
    name = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    labels[:] = class_ids[name]
    return np.ascontiguousarray(background_texture(name, rng, size), dtype=np.float32), labels, [name]


def where_phrase(backgrounds: list[str], pick) -> str:
    """Where the scene is ("on the grass under the sky"), or nothing (12%): captions do not always say."""
    where = pick.choice(BG_PHRASES[backgrounds[-1]])
    if len(backgrounds) == 2:
        where += " " + pick.choice(UPPER_PHRASES[backgrounds[0]])
    return "" if pick.random() < 0.12 else where


def scene_meta(objects: list[dict], backgrounds: list[str], labels: np.ndarray, instances: np.ndarray,
               class_ids: dict[str, int]) -> dict:
    """The scene record: each object (instance ``n`` is ``objects[n - 1]``) gains its area and box, in place."""
    for number, obj in enumerate(objects, 1):
        ys, xs = np.nonzero(instances == number)
        obj["area"] = int(len(ys))
        obj["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    return {
        "objects": objects,
        "backgrounds": [
            {"name": b, "class_id": class_ids[b], "area": int((labels == class_ids[b]).sum())} for b in backgrounds
        ],
    }
