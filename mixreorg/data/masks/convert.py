"""What every image-mask converter shares: checking one image and its masks, optional downsizing, and writing the
shards (+ manifest) atomically with a count of what was skipped and why.

A converter yields ``Item``s (an image's bytes and a way to get its masks); ``write_mask_dataset`` turns each into a
shard sample or a skip reason, so one bad image or mask never stops a conversion, and a conversion that finds
nothing usable fails with one line and writes nothing.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mixreorg.data.masks.records import BadMasks, EmptyMasks, decode_masks, mask_record, read_record
from mixreorg.data.shards import atomic_output_dir, write_shards
from mixreorg.errors import MixreorgError
from mixreorg.utils.progress import progress_bar

# Why an image was left out, as the summary counts it.
UNDECODABLE_IMAGE = "undecodable images"
UNUSABLE_MASKS = "images whose masks do not decode or do not fit the image"
NO_MASKS = "images without any mask"
INCOMPLETE = "images or mask files without their pair"


@dataclass
class Item:
    key: str
    image: bytes | None  # None: the image is missing (the masks came without it)
    # The record's JSON (SA-1B) or a function giving the masks and their per-mask extras at a (height, width)
    masks: bytes | dict | Callable[[tuple[int, int]], tuple[list[np.ndarray], dict]] | None


def _open(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)) > 127


def convert_item(item: Item, max_side: int) -> dict | str:
    """The shard sample of ``item`` (``jpg`` + SA-1B ``json``), or why it was skipped. Images larger than
    ``max_side`` (0: never) are scaled down, their masks with them; others keep their bytes when they are JPEGs."""
    if item.image is None or item.masks is None:
        return INCOMPLETE
    try:
        image = _open(item.image)
    except Exception:  # PIL raises many types for bad bytes
        return UNDECODABLE_IMAGE
    size = (image.height, image.width)
    try:
        if callable(item.masks):
            masks, extras = item.masks(size)
            record = mask_record(masks, item.key, f"{item.key}.jpg", **extras)
        else:
            record = read_record(item.masks)
            masks, extras = decode_masks(record, size), {}
    except EmptyMasks:
        return NO_MASKS
    except BadMasks:
        return UNUSABLE_MASKS
    scale = max_side / max(size) if max_side and max(size) > max_side else 1.0
    if scale < 1.0:
        new = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        image = image.resize((new[1], new[0]), Image.BILINEAR)
        resized = [_resize_mask(mask, new) for mask in masks]
        kept = [i for i, mask in enumerate(resized) if mask.any()]
        per_mask = {k: [v[i] for i in kept] for k, v in extras.items()}
        try:
            record = mask_record([resized[i] for i in kept], item.key, f"{item.key}.jpg", **per_mask)
        except EmptyMasks:
            return NO_MASKS
    if scale == 1.0 and item.image[:3] == b"\xff\xd8\xff":
        data = item.image
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
    return {"__key__": item.key, "jpg": data, "json": record}


def write_mask_dataset(items: Iterable[Item], out: str | Path, shard_size: int, max_side: int, total: int | None,
                       desc: str, source: str) -> dict:
    """Convert ``items`` into shards + manifest under ``out`` (atomically); returns the summary with the skips."""
    from mixreorg.data.verify import write_manifest

    if shard_size < 1:
        raise MixreorgError(f"--shard-size must be at least 1, got {shard_size}")
    if max_side < 0:
        raise MixreorgError(f"--max-side must be 0 (keep the size) or more, got {max_side}")
    skipped: Counter[str] = Counter()
    written = [0]

    def samples(progress) -> Iterator[dict]:
        for item in items:
            result = convert_item(item, max_side)
            progress.update(1)
            if isinstance(result, str):
                skipped[result] += 1
                continue
            written[0] += 1
            yield result

    with atomic_output_dir(out) as tmp, progress_bar(total=total, desc=desc, unit="img") as progress:
        shards = write_shards(samples(progress), tmp, shard_size)
        if not written[0]:
            reasons = ", ".join(f"{n} {why}" for why, n in skipped.items()) or "no image at all"
            raise MixreorgError(f"no usable image with masks in {source} ({reasons}); nothing was written")
        write_manifest(tmp / "manifest.json", shards)
    return {"out": str(out), "shards": len(shards), "samples": written[0], "skipped": dict(skipped)}
