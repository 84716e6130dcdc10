"""One image's masks as SA-1B distributes them, the format of our image-mask shards too.

A shard sample is ``{key}.jpg`` and ``{key}.json``; the JSON is SA-1B's per-image record::

    {"image": {"image_id": 7, "width": W, "height": H, "file_name": "..."},
     "annotations": [{"id": 0, "segmentation": {"size": [H, W], "counts": "<COCO RLE>"}, "area": A,
                      "bbox": [x, y, w, h]}, ...]}

SA-1B's own extra fields (predicted_iou, point_coords, ...) and ours (``category`` in the synthetic world) ride
along and are ignored by training. Masks are COCO run-length encoded (pycocotools), which is what SA-1B ships.
"""

from __future__ import annotations

import json

import numpy as np


class BadMasks(ValueError):
    """A record whose masks cannot be used: it does not decode, a mask has another size than the image, or it has
    no mask at all. The message says which."""


class EmptyMasks(BadMasks):
    """A record without any (non-empty) mask."""


def rle_encode(mask: np.ndarray) -> dict:
    """COCO run-length encoding of a boolean [H, W] mask, with ``counts`` as a JSON-ready string."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def annotation(mask: np.ndarray, index: int, **extra) -> dict:
    """SA-1B's annotation entry for a boolean mask (bbox as COCO's x, y, width, height)."""
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return {"id": index, "segmentation": rle_encode(mask), "area": int(len(ys)), "bbox": bbox, **extra}


def mask_record(masks: list[np.ndarray], image_id: int | str, file_name: str, **extras: list) -> dict:
    """The record of an image of the masks' size; ``extras`` name per-mask values (e.g. category=[...])."""
    if not masks:
        raise EmptyMasks("no mask")
    height, width = masks[0].shape
    annotations = [annotation(mask, index, **{key: values[index] for key, values in extras.items()})
                   for index, mask in enumerate(masks) if mask.any()]
    if not annotations:
        raise EmptyMasks("every mask is empty")
    return {"image": {"image_id": image_id, "width": int(width), "height": int(height), "file_name": file_name},
            "annotations": annotations}


def read_record(data: bytes | str | dict) -> dict:
    """A record from JSON bytes (or an already decoded dict), checked for the fields decoding needs."""
    try:
        record = data if isinstance(data, dict) else json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMasks(f"the mask JSON does not parse ({exc.__class__.__name__})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("annotations"), list):
        raise BadMasks("the mask JSON has no 'annotations' list (SA-1B's per-image format)")
    image = record.get("image")
    if not isinstance(image, dict) or not all(isinstance(image.get(k), int) for k in ("width", "height")):
        raise BadMasks("the mask JSON has no image width and height")
    if not record["annotations"]:
        raise EmptyMasks("an empty mask set")
    return record


def decode_mask(entry: dict, height: int, width: int) -> np.ndarray:
    """[H, W] bool of one annotation (compressed or uncompressed COCO RLE), checked against the image size."""
    from pycocotools import mask as mask_utils

    rle = entry.get("segmentation") if isinstance(entry, dict) else None
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise BadMasks("an annotation has no RLE segmentation (size and counts)")
    if [int(v) for v in rle["size"]] != [height, width]:
        raise BadMasks(f"a mask of size {rle['size'][0]}x{rle['size'][1]} on an image of {height}x{width}")
    try:
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
        else:
            rle = {"size": [height, width], "counts": rle["counts"].encode("ascii") if isinstance(rle["counts"], str)
                   else rle["counts"]}
        mask = mask_utils.decode(rle)
    except Exception as exc:  # pycocotools raises bare Exceptions and ValueErrors on bad counts
        raise BadMasks(f"a mask does not decode ({exc})") from exc
    if mask.shape != (height, width):
        raise BadMasks(f"a mask decodes to {mask.shape[0]}x{mask.shape[1]}, not the image's {height}x{width}")
    return mask.astype(bool)


def decode_masks(record: dict, image_size: tuple[int, int]) -> list[np.ndarray]:
    """Every mask of a record for an image of ``image_size`` (height, width); empty masks are left out."""
    height, width = image_size
    declared = (record["image"]["height"], record["image"]["width"])
    if declared != (height, width):
        raise BadMasks(f"the record is for a {declared[0]}x{declared[1]} image, the image is {height}x{width}")
    masks = [decode_mask(entry, height, width) for entry in record["annotations"]]
    masks = [mask for mask in masks if mask.any()]
    if not masks:
        raise EmptyMasks("every mask is empty")
    return masks

