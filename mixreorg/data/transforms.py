"""Image transforms: GroupViT's training augmentation, a light variant for tiny runs, and the eval transform.

A training augmentation has a per-image part (PIL crops, flips, RandAugment -> uint8 pixels) and a batch part
(ImageNet normalisation, then random erasing), so a loader converts a whole batch to float at once instead of
one image at a time; calling it on one image runs both. All randomness comes from torch's generator, which the
training loader seeds per batch, so a resumed epoch draws the same crops as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T

from mixreorg.errors import MixreorgError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("groupvit", "light")
# (x / 255 - mean) / std as one multiply-add
_SCALE = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD]).view(3, 1, 1)
_SHIFT = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]).view(3, 1, 1)


def to_pixels(image: Image.Image) -> Tensor:
    """PIL image -> uint8 tensor [3, H, W] (RGB)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)


def normalize_pixels(pixels: Tensor, out: Tensor | None = None) -> Tensor:
    """uint8 [..., 3, H, W] -> float ImageNet-normalised: the same values as ToTensor + Normalize.

    ``out`` (float, same shape) receives the result, e.g. a batch already in shared memory.
    """
    out = pixels.float() if out is None else out.copy_(pixels)
    return out.mul_(_SCALE).add_(_SHIFT)  # convert first: uint8 * float broadcasting is 2x slower


class ToNormalizedTensor:
    """ToTensor + Normalize(ImageNet) in two passes over the image instead of torchvision's six."""

    def __call__(self, image: Image.Image) -> Tensor:
        return normalize_pixels(to_pixels(image))


class TrainAugmentation:
    """``pixels(image)`` per image, ``finish(batch)`` per batch; ``augmentation(image)`` does both for one image."""

    def __init__(self, image_ops: list, erase_probability: float = 0.0) -> None:
        self.image_ops = T.Compose(image_ops)
        # timm's RandomErasing(mode='pixel'): per-pixel Gaussian noise in normalised space.
        self.erase = T.RandomErasing(p=erase_probability, value="random", inplace=True) if erase_probability else None

    def pixels(self, image: Image.Image) -> Tensor:
        return to_pixels(self.image_ops(image))

    def finish(self, pixels: Tensor, out: Tensor | None = None) -> Tensor:
        images = normalize_pixels(pixels, out)
        if self.erase is not None:
            for image in images:
                self.erase(image)  # in place on the batch's view
        return images

    def __call__(self, image: Image.Image) -> Tensor:
        return self.finish(self.pixels(image)[None])[0]


def groupvit_train_transform(image_size: int = 224, crop_scale_min: float = 0.08) -> TrainAugmentation:
    """timm ``create_transform(224, is_training=True)`` as GroupViT configures it (spec section 4):
    RandomResizedCrop(scale (0.08, 1)), flip, RandAugment, ToTensor + ImageNet Normalize, RandomErasing(p 0.25).

    RandAugment: timm's ``rand-m9-mstd0.5-inc1`` (2 ops, magnitude 9 of 10 with per-op Gaussian noise of std 0.5,
    the "increasing" op variants) is replaced by torchvision's RandAugment with 2 ops at magnitude 9 of 10
    (``num_magnitude_bins=11``, fill = timm's mean pixel). It uses the magnitude as given instead of jittering it
    and has the same op families with severity rising with magnitude: an accepted equivalent for this recipe.
    """
    return TrainAugmentation(
        [
            T.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0), interpolation=T.InterpolationMode.BILINEAR),
            T.RandomHorizontalFlip(),
            T.RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=11, fill=[124, 116, 104]),
        ],
        erase_probability=0.25,
    )


def light_train_transform(image_size: int, crop_scale_min: float = 0.5) -> TrainAugmentation:
    """Random resized crop (scale from ``crop_scale_min``) and flip only: for tiny models on the synthetic corpus."""
    return TrainAugmentation([
        T.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0), interpolation=T.InterpolationMode.BILINEAR),
        T.RandomHorizontalFlip(),
    ])


def build_train_transform(augmentation: str, image_size: int, crop_scale_min: float) -> TrainAugmentation:
    if not 0.0 < crop_scale_min <= 1.0:
        raise MixreorgError(f"data.crop_scale_min must be in (0, 1], got {crop_scale_min}")
    if augmentation == "groupvit":
        return groupvit_train_transform(image_size, crop_scale_min)
    if augmentation == "light":
        return light_train_transform(image_size, crop_scale_min)
    raise MixreorgError(f"unknown data.augmentation '{augmentation}'; choose one of {', '.join(AUGMENTATIONS)}")


def eval_transform(image_size: int = 224) -> T.Compose:
    """ImageNet evaluation: resize the short side to size*256/224, centre crop, normalise."""
    return T.Compose([
        T.Resize(round(image_size * 256 / 224), interpolation=T.InterpolationMode.BILINEAR),
        T.CenterCrop(image_size),
        ToNormalizedTensor(),
    ])
