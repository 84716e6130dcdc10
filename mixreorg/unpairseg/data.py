"""Unpair-Seg's training batches, streamed by the shared loader (``mixreorg.data.loader``: sharding, shuffling,
per-batch seeds, resuming, skip accounting).

Stage 1 (``MaskBatchStream``), from image-mask shards (``mixreorg.data.masks.records``): per image a scale jitter,
a random crop or pad to the training size and a flip, applied alike to the image and its masks; masks go to the
mask resolution (stride 4) as coverage; the prompts are drawn from them (``prompts.sample_training_prompts``).
A sample whose masks do not decode, do not fit the image or are missing is counted ("unusable_masks") and replaced
by another of its batch, as an undecodable image is. Batch: (uint8 images [B, 3, S, S], masks [B, M, S/4, S/4]
coverage 0-255 uint8, boxes [B, P, 4], kinds [B, P], targets [B, P] indices into each image's masks).

Stage 2 (``CaptionBatchStream``), from image-text shards: images under the light augmentation and the caption field
the config names. Batch: (uint8 images [B, 3, S, S], list of B captions).
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import get_worker_info

from mixreorg.data.loader import ShardBatchStream, decode_image, fill_bad
from mixreorg.data.masks.records import BadMasks, decode_masks, read_record
from mixreorg.data.skipped import ShardTally
from mixreorg.data.transforms import TrainAugmentation, pixel_batch, to_pixels
from mixreorg.unpairseg.prompts import sample_training_prompts

MASK_STRIDE = 4
MASKS_AT_ONCE = 16  # masks resized per tensor op (an SA-1B image has ~100 at 1500 x 2250)


def place(size: tuple[int, int], target: int, scale: float,
          rng: random.Random) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where an image of ``size`` (h, w) goes: its resized (h, w) at ``scale`` x the fit of its long side to
    ``target``, and the (top, left) offset, a multiple of the mask stride, of the ``target`` square cut from it (0
    along a side shorter than the square, which is then padded at the bottom or right)."""
    fit = target / max(size)
    resized = (max(1, round(size[0] * fit * scale)), max(1, round(size[1] * fit * scale)))
    offset = tuple(MASK_STRIDE * rng.randrange((side - target) // MASK_STRIDE + 1) if side > target else 0
                   for side in resized)
    return resized, offset


def transform_sample(image: Image.Image, masks: list[np.ndarray], target: int, scale_range: tuple[float, float],
                     rng: random.Random) -> tuple[torch.Tensor, np.ndarray]:
    """(uint8 [3, S, S] image, [M', S/4, S/4] float mask coverage) after scale jitter, crop/pad and flip; masks left
    with under one mask pixel of area are dropped. Without jitter (scale 1, no crop) when the jitter lost every mask."""
    low, high = scale_range
    for attempt in range(2):
        scale = rng.uniform(low, high) if attempt == 0 else 1.0
        flip = rng.random() < 0.5
        (height, width), (top, left) = place((image.height, image.width), target, scale, rng)
        coverage = _masks_at(masks, (height, width), (top, left), target)
        if flip:
            coverage = coverage[:, :, ::-1]
        keep = coverage.reshape(len(coverage), -1).sum(axis=1) >= 1.0
        if keep.any():
            break
    pixels = torch.zeros(3, target, target, dtype=torch.uint8)
    resized = to_pixels(image.resize((width, height), Image.BILINEAR))[:, top:top + target, left:left + target]
    pixels[:, : resized.shape[1], : resized.shape[2]] = resized
    if flip:
        pixels = pixels.flip(-1)
    return pixels, np.ascontiguousarray(coverage[keep])


def _masks_at(masks: list[np.ndarray], resized: tuple[int, int], offset: tuple[int, int], target: int) -> np.ndarray:
    """[M, S/4, S/4] coverage of the masks on the placed image (area-resized straight to the mask grid)."""
    grid = target // MASK_STRIDE
    height, width = (-(-resized[0] // MASK_STRIDE), -(-resized[1] // MASK_STRIDE))
    top, left = offset[0] // MASK_STRIDE, offset[1] // MASK_STRIDE
    out = np.zeros((len(masks), grid, grid), dtype=np.float32)
    for start in range(0, len(masks), MASKS_AT_ONCE):
        chunk = torch.from_numpy(np.stack(masks[start:start + MASKS_AT_ONCE])).float()[:, None]
        small = F.adaptive_avg_pool2d(chunk, (height, width))[:, 0, top:top + grid, left:left + grid].numpy()
        out[start:start + len(small), : small.shape[1], : small.shape[2]] = small
    return out


class MaskBatchStream(ShardBatchStream):
    fields = ("json",)

    def _decode(self, sample: dict, tally: ShardTally):
        image = decode_image(sample, tally)
        if image is None:
            return None
        try:
            record = read_record(sample["json"])
            return image, decode_masks(record, (image.height, image.width))
        except BadMasks as exc:
            tally.bad_sample("unusable_masks", str(sample.get("__url__")), str(sample.get("__key__")), str(exc))
            return None

    def _collate(self, raw: list[dict], seed: int, transform: TrainAugmentation, tally: ShardTally):
        spec, options = self.spec, dict(self.spec.options)
        decoded = fill_bad([self._decode(sample, tally) for sample in raw], raw, "image with usable masks")
        tally.batch_read(len(raw))
        geometry = random.Random(seed)
        prompts_rng = np.random.default_rng(seed)
        size = spec.image_size
        images = pixel_batch(len(raw), size, shared=get_worker_info() is not None)
        per_image = []
        for row, (image, masks) in enumerate(decoded):
            pixels, coverage = transform_sample(image, masks, size, tuple(options["scale_range"]), geometry)
            coverage = np.rint(coverage * 255).astype(np.uint8)  # as sent: prompts are drawn on what is trained on
            images[row].copy_(pixels)
            boxes, kinds, targets = sample_training_prompts(coverage / 255.0, size, options["grid"],
                                                            options["box_probability"], prompts_rng)
            used, targets = np.unique(targets, return_inverse=True)  # send only the masks some prompt asks for
            per_image.append((coverage[used], boxes, kinds, targets))
        count = max(len(masks) for masks, *_ in per_image)
        grid = size // MASK_STRIDE
        masks = torch.zeros(len(raw), count, grid, grid, dtype=torch.uint8)
        for row, (coverage, *_) in enumerate(per_image):
            masks[row, : len(coverage)] = torch.from_numpy(coverage)
        stack = [torch.from_numpy(np.stack([item[k] for item in per_image])) for k in (1, 2, 3)]
        return images, masks, *stack


class CaptionBatchStream(ShardBatchStream):
    @property
    def fields(self) -> tuple[str, ...]:
        return (dict(self.spec.options)["caption_field"],)

    def _collate(self, raw: list[dict], seed: int, transform: TrainAugmentation, tally: ShardTally):
        decoded = fill_bad([self._decode(sample, tally) for sample in raw], raw)
        tally.batch_read(len(raw))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = pixel_batch(len(raw), self.spec.image_size, shared=get_worker_info() is not None)
            images = transform.batch([image for image, _ in decoded], out=out)
        return images, [caption for _, caption in decoded]
