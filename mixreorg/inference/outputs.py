"""Turn a segmentation into files: an indexed PNG mask, an overlay with a legend, and a JSON record.

The mask PNG stores label indices (palette mode, so any viewer shows colours and any reader gets the
indices back); the JSON names each index, gives its pixel share and a COCO RLE mask (pycocotools).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mixreorg.errors import MixreorgError
from mixreorg.utils.io import atomic_path, atomic_write_text

BACKGROUND_COLOR = (0, 0, 0)


def palette(count: int = 256) -> np.ndarray:
    """[count, 3] uint8 colours: the PASCAL VOC scheme (bits of the index spread over R, G and B), so
    neighbouring indices get clearly different colours and index 0 is black."""
    colors = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        value, shift = index, 7
        while value:
            for channel in range(3):
                colors[index, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return colors


def label_colors(labels: list[str], background_first: bool) -> np.ndarray:
    """Colour of each label index; without a background class, label 0 skips the black entry."""
    offset = 0 if background_first else 1
    return palette(len(labels) + offset)[offset:]


def save_mask_png(label_map: np.ndarray, labels: list[str], background_first: bool, path: str | Path) -> None:
    if len(labels) > 256:
        raise ValueError("an indexed PNG holds at most 256 labels")
    image = Image.fromarray(label_map.astype(np.uint8))  # mode L; putpalette turns it into P
    colors = np.zeros((256, 3), dtype=np.uint8)
    colors[: len(labels)] = label_colors(labels, background_first)
    image.putpalette(colors.flatten().tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def overlay_image(
    image: np.ndarray,
    label_map: np.ndarray,
    labels: list[str],
    shares: list[float],
    background_first: bool,
    alpha: float = 0.5,
) -> Image.Image:
    """The image with each label's colour blended in, plus a legend panel (labels present, by share)."""
    colors = label_colors(labels, background_first)
    blended = image.astype(np.float32) * (1 - alpha) + colors[label_map].astype(np.float32) * alpha
    if background_first:  # keep background pixels as they are
        keep = label_map == 0
        blended[keep] = image[keep]
    height, width = label_map.shape
    font_size = max(11, min(32, min(height, width) // 24))
    font = _font(font_size)
    present = sorted((i for i, share in enumerate(shares) if share > 0), key=lambda i: -shares[i])
    entries = [(colors[i], f"{labels[i]}  {100 * shares[i]:.1f}%") for i in present]
    row = font_size + font_size // 2
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max((measure.textlength(text, font=font) for _, text in entries), default=0)
    panel = int(row + text_width + 2 * font_size)
    canvas = Image.new("RGB", (width + panel, max(height, row * len(entries) + font_size)), (255, 255, 255))
    canvas.paste(Image.fromarray(blended.round().clip(0, 255).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, (color, text) in enumerate(entries):
        top = font_size // 2 + k * row
        left = width + font_size // 2
        swatch = [left, top, left + font_size, top + font_size]
        draw.rectangle(swatch, fill=tuple(int(c) for c in color), outline=(0, 0, 0))
        draw.text((left + font_size + font_size // 2, top), text, fill=(0, 0, 0), font=font)
    return canvas


def save_overlay_png(
    image: np.ndarray,
    label_map: np.ndarray,
    labels: list[str],
    shares: list[float],
    background_first: bool,
    path: str | Path,
) -> None:
    canvas = overlay_image(image, label_map, labels, shares, background_first)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def rle_encode(mask: np.ndarray) -> dict:
    """COCO run-length encoding of a boolean [H, W] mask, with ``counts`` as a JSON-ready string."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def segmentation_record(
    label_map: np.ndarray, labels: list[str], scores: list[float], background_first: bool, extra: dict | None = None
) -> dict:
    """Everything a program needs from one result: per label its index, pixels, share, score and RLE mask."""
    counts = np.bincount(label_map.ravel(), minlength=len(labels))
    total = int(label_map.size)
    segments = []
    for index, name in enumerate(labels):
        segments.append(
            {
                "index": index,
                "label": name,
                "is_background": background_first and index == 0,
                "pixels": int(counts[index]),
                "pixel_share": float(counts[index]) / total,
                "score": float(scores[index]),
                "rle": rle_encode(label_map == index),
            }
        )
    record = dict(extra or {})
    record.update(
        {
            "height": int(label_map.shape[0]),
            "width": int(label_map.shape[1]),
            "labels": labels,
            "segments": segments,
        }
    )
    return record


def save_json(record: dict, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


FORMATS = ("png", "overlay", "json")


def parse_formats(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in chosen if name not in FORMATS]
    if unknown or not chosen:
        raise MixreorgError(f"unknown output format '{','.join(unknown) or text}'; use any of: {','.join(FORMATS)}")
    return chosen


def unique_stem(path: Path, used: set[str]) -> str:
    """The file's stem, suffixed -2, -3, ... when another input already produced it."""
    stem, count = path.stem, 1
    while stem in used:
        count += 1
        stem = f"{path.stem}-{count}"
    used.add(stem)
    return stem


def write_outputs(result, out_dir: Path, stem: str, formats: tuple[str, ...], extra: dict) -> list[Path]:
    """Write the chosen files for one ``Segmentation``; returns their paths."""
    written = []
    shares = result.pixel_share
    if "png" in formats:
        written.append(out_dir / f"{stem}_mask.png")
        save_mask_png(result.label_map, result.labels, result.has_background, written[-1])
    if "overlay" in formats:
        written.append(out_dir / f"{stem}_overlay.png")
        save_overlay_png(result.image, result.label_map, result.labels, shares, result.has_background, written[-1])
    if "json" in formats:
        written.append(out_dir / f"{stem}.json")
        record = segmentation_record(result.label_map, result.labels, result.scores.tolist(),
                                     result.has_background, extra)
        save_json(record, written[-1])
    return written


def summary_line(path: Path, result, seconds: float, written: list[Path], top: int = 4) -> str:
    """'photo.jpg 640x480: cat 41.2%, sky 30.1% (+1 more) -> out/photo_mask.png ... [0.42 s]'."""
    shares = result.pixel_share
    order = [i for i in sorted(range(len(shares)), key=lambda i: -shares[i]) if shares[i] > 0]
    parts = [f"{result.labels[i]} {100 * shares[i]:.1f}%" for i in order[:top]]
    more = f" (+{len(order) - top} more)" if len(order) > top else ""
    height, width = result.label_map.shape
    return f"{path} {width}x{height}: {', '.join(parts)}{more} -> {', '.join(map(str, written))} [{seconds:.2f} s]"


def check_output_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and prove it is writable before any image is processed."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc
        raise MixreorgError(f"cannot write to the output folder {out_dir} ({reason}); pick another --out") from exc


@dataclass
class FileOutcome:
    path: Path
    ok: bool
    message: str  # the summary line, or why the file was skipped


def segment_files(predictor, files: list[Path], out_dir: Path, formats: tuple[str, ...],
                  background_threshold: float | None) -> Iterator[FileOutcome]:
    """Segment each file and write its outputs; an unreadable file is reported and the rest go on (any other
    error, e.g. a bad threshold, concerns every file and is raised)."""
    import time

    from mixreorg import __version__
    from mixreorg.inference.predictor import load_image

    used: set[str] = set()
    for path in files:
        start = time.perf_counter()
        try:
            image = load_image(path)
        except MixreorgError as exc:
            yield FileOutcome(path, False, f"skipped {exc}")
            continue
        result = predictor.predict(image, background_threshold=background_threshold)
        extra = {
            "image": str(path),
            "checkpoint": predictor.checkpoint,
            "background_threshold": background_threshold,
            "size": predictor.size,
            "mixreorg_version": __version__,
        }
        written = write_outputs(result, out_dir, unique_stem(path, used), formats, extra)
        yield FileOutcome(path, True, summary_line(path, result, time.perf_counter() - start, written))
