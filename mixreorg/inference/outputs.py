"""A segmentation as files: an indexed PNG mask, the picture, and a JSON record.

The mask PNG stores label indices (palette mode, so any viewer shows the label colours and any reader gets the
indices back). The JSON gives every label's ranking score and, for the labels present, their pixels, share and
a COCO RLE mask (pycocotools), with the image's absolute path and the settings that produced it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mixreorg.data.masks.records import rle_encode
from mixreorg.errors import MixreorgError
from mixreorg.utils.io import atomic_path, atomic_write_text

FORMATS = ("mask", "overlay", "json")
FORMAT_ALIASES = {"png": "mask"}  # the name before 0.2


def save_mask_png(label_map: np.ndarray, colors: np.ndarray, path: str | Path) -> None:
    if len(colors) > 256:
        raise MixreorgError(f"an indexed PNG holds at most 256 labels, not {len(colors)}; write --format json")
    image = Image.fromarray(label_map.astype(np.uint8))  # mode L; putpalette turns it into P
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(colors)] = colors
    image.putpalette(palette.flatten().tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def segmentation_record(result) -> dict:
    """Everything a program needs from one ``Segmentation``."""
    from mixreorg import __version__

    counts = np.bincount(result.label_map.ravel(), minlength=len(result.labels))
    total = int(result.label_map.size)
    segments = [
        {
            "index": index,
            "label": name,
            "is_background": result.has_background and index == 0,
            "pixels": int(counts[index]),
            "pixel_share": float(counts[index]) / total,
            "score": float(result.scores[index]),
            "rle": rle_encode(result.label_map == index),
        }
        for index, name in enumerate(result.labels)
        if counts[index] > 0
    ]
    segments.sort(key=lambda segment: -segment["pixels"])
    return {
        "image": result.source,
        "height": int(result.label_map.shape[0]),
        "width": int(result.label_map.shape[1]),
        "labels": list(result.labels),
        # Max over pixels of each label's probability, present or not: rank labels by it.
        "label_scores": {name: round(float(score), 6) for name, score in zip(result.labels, result.label_scores,
                                                                              strict=True)},
        "segments": segments,
        **result.settings,
        "mixreorg_version": __version__,
    }


def parse_formats(text: str) -> tuple[str, ...]:
    names = (FORMAT_ALIASES.get(part.strip(), part.strip()) for part in text.split(",") if part.strip())
    chosen = tuple(dict.fromkeys(names))
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


def write_outputs(result, out_dir: Path, stem: str, formats: tuple[str, ...]) -> list[Path]:
    """Write the chosen files for one ``Segmentation``; returns their paths."""
    written = []
    if "mask" in formats:
        written.append(out_dir / f"{stem}_mask.png")
        save_mask_png(result.label_map, result.colors(), written[-1])
    if "overlay" in formats:
        written.append(out_dir / f"{stem}_overlay.png")
        with atomic_path(written[-1]) as tmp:
            result.overlay().save(tmp, format="PNG")
    if "json" in formats:
        written.append(out_dir / f"{stem}.json")
        atomic_write_text(written[-1], json.dumps(result.record(), indent=1) + "\n")
    return written


def summary_line(path: Path, result, seconds: float, written: list[Path], top: int = 4) -> str:
    """'photo.jpg 640x480: cat 41.2%, sky 30.1% (+1 more) -> out/photo_mask.png ... [0.42 s]'."""
    shares = dict(zip(result.labels, result.pixel_share, strict=True))
    present = result.present
    parts = [f"{name} {100 * shares[name]:.1f}%" for name in present[:top]]
    more = f" (+{len(present) - top} more)" if len(present) > top else ""
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


def prompt_files(predictor, files: Sequence[Path], out_dir: Path, formats: tuple[str, ...], points: list,
                 boxes: list) -> Iterator[FileOutcome]:
    """Each file's promptable masks (``Predictor.predict_prompts``), written as ``segment_files`` writes labels; a
    file that does not load, or that a prompt lies outside of, is reported and the rest go on."""
    from mixreorg.inference.inputs import load_image
    from mixreorg.inference.visual_prompts import PromptOutside

    used: set[str] = set()
    for path in files:
        began = time.perf_counter()
        try:
            image = load_image(path)
        except MixreorgError as exc:
            yield FileOutcome(path, False, f"skipped {exc}")
            continue
        try:
            result = predictor.predict_prompts(image, points, boxes)
        except PromptOutside as exc:  # a smaller image than the others: the rest may fit
            yield FileOutcome(path, False, f"skipped {path}: {exc}")
            continue
        result.source = str(path.expanduser().resolve())
        written = write_outputs(result, out_dir, unique_stem(path, used), formats)
        yield FileOutcome(path, True, summary_line(path, result, time.perf_counter() - began, written))


def segment_files(predictor, files: Sequence[Path], out_dir: Path, formats: tuple[str, ...],
                  background_threshold: float | None, batch: int = 4) -> Iterator[FileOutcome]:
    """Segment the files ``batch`` at a time and write each one's outputs; an unreadable file is reported and the
    rest go on (any other error, e.g. a bad threshold, concerns every file and is raised)."""
    from mixreorg.inference.inputs import load_image

    used: set[str] = set()
    for start in range(0, len(files), batch):
        began = time.perf_counter()
        loaded = []
        for path in files[start : start + batch]:
            try:
                loaded.append((path, load_image(path)))
            except MixreorgError as exc:
                yield FileOutcome(path, False, f"skipped {exc}")
        if not loaded:
            continue
        results = predictor.predict([image for _, image in loaded], background_threshold=background_threshold)
        seconds = (time.perf_counter() - began) / len(loaded)
        for (path, _), result in zip(loaded, results, strict=True):
            result.source = str(path.expanduser().resolve())
            written = write_outputs(result, out_dir, unique_stem(path, used), formats)
            yield FileOutcome(path, True, summary_line(path, result, seconds, written))
