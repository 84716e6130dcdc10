"""COCO's instance or panoptic annotations, into image-mask shards (class-agnostic: the category rides along).

Instances (``instances_*.json``): each annotation's polygons or RLE become a mask, crowd regions included.
Panoptic (``panoptic_*.json`` + its PNG folder): each segment of an image's PNG (id = R + 256 G + 256^2 B) becomes a
mask, things and stuff alike. Which one a file is follows from its content. Images without annotations, and
annotations that do not decode or do not fit their image, are skipped and counted.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from mixreorg.data.masks.convert import Item, write_mask_dataset
from mixreorg.data.masks.records import BadMasks
from mixreorg.errors import MixreorgError


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MixreorgError(f"cannot read COCO annotations from {path} ({exc.__class__.__name__}); pass "
                            "instances_*.json or panoptic_*.json") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
        raise MixreorgError(f"{path} is not a COCO annotation file (no 'images' and 'annotations')")
    return data


def _instance_masks(annotations: list[dict], names: dict[int, str]):
    def masks(size: tuple[int, int]) -> tuple[list[np.ndarray], dict]:
        from pycocotools import mask as mask_utils

        height, width = size
        out, categories = [], []
        for annotation in annotations:
            segmentation = annotation.get("segmentation")
            try:
                if isinstance(segmentation, list):
                    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
                elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
                    rle = mask_utils.frPyObjects(segmentation, height, width)
                elif isinstance(segmentation, dict):
                    if list(segmentation.get("size", [])) != [height, width]:
                        raise BadMasks("an RLE mask of another size than its image")
                    rle = {"size": [height, width], "counts": str(segmentation["counts"]).encode("ascii")}
                else:
                    raise BadMasks("an annotation without a segmentation")
                out.append(mask_utils.decode(rle).astype(bool))
            except BadMasks:
                raise
            except Exception as exc:  # pycocotools raises bare Exceptions on bad input
                raise BadMasks(f"an annotation does not decode ({exc})") from exc
            categories.append(names.get(annotation.get("category_id"), ""))
        return out, {"category": categories}

    return masks


def _panoptic_masks(png: Path, segments: list[dict], names: dict[int, str]):
    def masks(size: tuple[int, int]) -> tuple[list[np.ndarray], dict]:
        try:
            with Image.open(png) as image:
                rgb = np.asarray(image.convert("RGB"), dtype=np.uint32)
        except (OSError, ValueError) as exc:
            raise BadMasks(f"the panoptic PNG {png.name} does not decode") from exc
        if rgb.shape[:2] != size:
            raise BadMasks(f"the panoptic PNG {png.name} is {rgb.shape[0]}x{rgb.shape[1]}, its image "
                           f"{size[0]}x{size[1]}")
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        out = [ids == segment["id"] for segment in segments]
        return out, {"category": [names.get(segment.get("category_id"), "") for segment in segments]}

    return masks


def _no_masks(size: tuple[int, int]) -> tuple[list[np.ndarray], dict]:
    return [], {"category": []}


def coco_items(annotations: Path, images: Path, panoptic_masks: Path | None = None,
               limit: int = 0) -> tuple[Iterator[Item], int]:
    """The items of a COCO annotation file (the first ``limit`` images, 0: all), read one at a time, and how many
    images that is."""
    data = _read_json(annotations)
    names = {c["id"]: c.get("name", "") for c in data.get("categories", []) if isinstance(c, dict) and "id" in c}
    panoptic = any("segments_info" in a for a in data["annotations"][:1])
    if panoptic and panoptic_masks is None:
        raise MixreorgError(f"{annotations} is a panoptic file; pass its PNG folder with --panoptic-masks")
    by_image: dict[int, list[dict]] = defaultdict(list)
    for annotation in data["annotations"]:
        by_image[annotation.get("image_id")].append(annotation)
    listed = data["images"][: limit or None]

    def items() -> Iterator[Item]:
        for entry in listed:
            path = images / entry.get("file_name", "")
            found = by_image.get(entry.get("id"), [])
            if not panoptic:
                masks = _instance_masks(found, names)
            elif not found or not found[0].get("segments_info"):
                masks = _no_masks
            else:
                png = panoptic_masks / found[0].get("file_name", "")
                masks = _panoptic_masks(png, found[0]["segments_info"], names) if png.is_file() else None
            key = Path(entry.get("file_name", str(entry.get("id")))).stem
            yield Item(key, path.read_bytes() if path.is_file() else None, masks)

    return items(), len(listed)


def convert_coco(annotations: str | Path, images: str | Path, out: str | Path, panoptic_masks: str | Path | None = None,
                 limit: int = 0, max_side: int = 1024, shard_size: int = 1000) -> dict:
    annotations, images = Path(annotations).expanduser(), Path(images).expanduser()
    if not images.is_dir():
        raise MixreorgError(f"--images {images} is not a folder; pass COCO's image folder (e.g. train2017)")
    if panoptic_masks is not None and not Path(panoptic_masks).is_dir():
        raise MixreorgError(f"--panoptic-masks {panoptic_masks} is not a folder; pass the panoptic PNG folder")
    if limit < 0:
        raise MixreorgError(f"--limit must be 0 (all) or more, got {limit}")
    items, total = coco_items(annotations, images, Path(panoptic_masks) if panoptic_masks else None, limit)
    return write_mask_dataset(items, out, shard_size, max_side, total, "coco", str(annotations))

