"""Image transforms: GroupViT's training augmentation, a light variant for tiny runs, and the eval transform.

A training augmentation turns a list of PIL images into one uint8 batch [B, 3, S, S] (channels-last memory):
per image a random resized crop, a flip and optionally RandAugment, written straight into the batch, then
random erasing per image on the uint8 pixels. Float conversion and ImageNet normalisation are left to the
consumer (``normalize_pixels`` on the training device), so a loader worker builds and ships a quarter of the
bytes. All randomness comes from torch's generator in torchvision's order, which the training loader seeds per
batch, so a resumed epoch draws the same crops, flips, ops and erased boxes as an uninterrupted one.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
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
# a normalised value z is the pixel mean*255 + std*255*z
_PIXEL_MEAN = torch.tensor([255.0 * m for m in IMAGENET_MEAN]).view(3, 1, 1)
_PIXEL_STD = torch.tensor([255.0 * s for s in IMAGENET_STD]).view(3, 1, 1)


def to_pixels(image: Image.Image) -> Tensor:
    """PIL image -> uint8 tensor [3, H, W] (RGB)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)


@functools.lru_cache(maxsize=8)
def _normalisation(device: torch.device) -> tuple[Tensor, Tensor]:
    return _SCALE.to(device), _SHIFT.to(device)


def normalize_pixels(pixels: Tensor, out: Tensor | None = None) -> Tensor:
    """uint8 [..., 3, H, W] in any memory layout -> contiguous float ImageNet-normalised, on ``pixels``' device:
    the same values as ToTensor + Normalize.

    ``out`` (float, same shape) receives the result, e.g. a reused buffer.
    """
    if out is None:
        out = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device)
    scale, shift = _normalisation(out.device)
    return out.copy_(pixels).mul_(scale).add_(shift)  # convert first: uint8 * float broadcasting is 2x slower


def noise_to_pixels(noise: Tensor) -> Tensor:
    """Values in normalised space [3, h, w] -> the uint8 pixels that normalise to them, rounded and clipped to
    0..255: N(0, 1) noise comes out quantised in steps of 1/(255 std) and cut at -2.1..-1.8 below, 2.2..2.6 above."""
    return noise.mul(_PIXEL_STD).add_(_PIXEL_MEAN).round_().clamp_(0, 255).to(torch.uint8)


class ToNormalizedTensor:
    """ToTensor + Normalize(ImageNet) in two passes over the image instead of torchvision's six."""

    def __call__(self, image: Image.Image) -> Tensor:
        return normalize_pixels(to_pixels(image))


class RandomResizedCropPixels:
    """torchvision's RandomResizedCrop (bilinear) from a PIL image to a uint8 HWC tensor [size, size, 3].

    The crop is drawn by torchvision's own ``get_params`` (same draws from torch's generator), and resized by
    torch's antialiased bilinear uint8 kernel instead of PIL's: within one grey level of torchvision's result
    and, crop and copies included, 2-3x faster (measured on x86 with AVX2; elsewhere torch's generic kernel runs).
    """

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size, self.scale, self.ratio = size, scale, ratio

    def __call__(self, image: Image.Image) -> Tensor:
        top, left, height, width = T.RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        crop = torch.from_numpy(np.array(image.crop((left, top, left + width, top + height))))
        # [1, 3, h, w] with channels-last strides: the layout the fast uint8 kernel takes and gives back
        resized = F.interpolate(
            crop[None].permute(0, 3, 1, 2), size=(self.size, self.size), mode="bilinear", antialias=True
        )
        return resized[0].permute(1, 2, 0)


class CachedRandAugment(T.RandAugment):
    """torchvision's RandAugment with its table of op magnitudes built once per image size, not once per image."""

    def _augmentation_space(self, num_bins: int, image_size: tuple[int, int]) -> dict[str, tuple[Tensor, bool]]:
        cache = self.__dict__.setdefault("_space_cache", {})
        key = (num_bins, tuple(image_size))
        if key not in cache:
            cache[key] = super()._augmentation_space(num_bins, image_size)
        return cache[key]


class TrainAugmentation:
    """Random resized crop, horizontal flip, optional RandAugment, optional random erasing -> uint8 pixels.

    ``batch(images)`` makes the uint8 batch a loader yields; ``augmentation(image)`` gives one normalised float
    image [3, S, S] (the same pixels, normalised here instead of on the training device).

    Random erasing is timm's ``RandomErasing(mode='pixel')`` (per-pixel N(0, 1) noise in normalised space) drawn
    exactly as torchvision's ``RandomErasing(value='random')`` draws it, but written into the uint8 pixels as the
    values that normalise to the noise, so it quantises the noise and clips it to the pixel range (see
    ``noise_to_pixels``).
    """

    def __init__(
        self,
        image_size: int,
        crop_scale: tuple[float, float],
        rand_augment: T.RandAugment | None = None,
        erase_probability: float = 0.0,
    ) -> None:
        self.image_size = image_size
        self.crop = RandomResizedCropPixels(image_size, crop_scale)
        self.rand_augment = rand_augment
        self.erase_probability = erase_probability
        self.erase_scale, self.erase_ratio = (0.02, 0.33), (0.3, 3.3)  # torchvision's (and timm's) defaults

    def write(self, image: Image.Image, out: Tensor) -> None:
        """Augment one PIL image into ``out``, a uint8 HWC view [S, S, 3] (one slot of a batch)."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        pixels = self.crop(rgb)
        if torch.rand(1) < 0.5:  # RandomHorizontalFlip's draw
            pixels = pixels.flip(1)
        if self.rand_augment is None:
            out.copy_(pixels)
        else:  # its ops are PIL's (torchvision's tensor versions are slower)
            out.numpy()[...] = np.asarray(self.rand_augment(Image.fromarray(pixels.numpy())))

    def erase(self, pixels: Tensor) -> None:
        """Random erasing in place on one uint8 image [3, S, S] (any memory layout)."""
        if not self.erase_probability or not torch.rand(1) < self.erase_probability:
            return
        top, left, height, width, noise = T.RandomErasing.get_params(
            pixels, scale=self.erase_scale, ratio=self.erase_ratio, value=None
        )
        if noise is not pixels:  # torchvision's answer when no box fits: leave the image as it is
            pixels[:, top : top + height, left : left + width] = noise_to_pixels(noise)

    def batch(self, images: list[Image.Image], out: Tensor | None = None) -> Tensor:
        """PIL images -> uint8 [B, 3, S, S] with channels-last memory, written into ``out`` when given
        (such a tensor, e.g. made by ``pixel_batch`` in shared memory)."""
        out = pixel_batch(len(images), self.image_size) if out is None else out
        for image, slot in zip(images, out, strict=True):
            self.write(image, slot.permute(1, 2, 0))
        for slot in out:  # after all crops, as a batch-level erasing would draw it
            self.erase(slot)
        return out

    def __call__(self, image: Image.Image) -> Tensor:
        return normalize_pixels(self.batch([image]))[0]


def pixel_batch(batch_size: int, image_size: int, shared: bool = False) -> Tensor:
    """An empty uint8 batch [B, 3, S, S] laid out channels-last (each image's HWC pixels contiguous), optionally
    in shared memory."""
    pixels = torch.empty((batch_size, image_size, image_size, 3), dtype=torch.uint8)
    return (pixels.share_memory_() if shared else pixels).permute(0, 3, 1, 2)


def groupvit_train_transform(image_size: int = 224, crop_scale_min: float = 0.08) -> TrainAugmentation:
    """timm ``create_transform(224, is_training=True)`` as GroupViT configures it (spec section 4):
    RandomResizedCrop(scale (0.08, 1)), flip, RandAugment, ToTensor + ImageNet Normalize, RandomErasing(p 0.25).

    RandAugment: timm's ``rand-m9-mstd0.5-inc1`` (2 ops, magnitude 9 of 10 with per-op Gaussian noise of std 0.5,
    the "increasing" op variants) is replaced by torchvision's RandAugment with 2 ops at magnitude 9 of 10
    (``num_magnitude_bins=11``, fill = timm's mean pixel). It uses the magnitude as given instead of jittering it
    and has the same op families with severity rising with magnitude: an accepted equivalent for this recipe.
    Random erasing is quantised to uint8 pixels (see ``TrainAugmentation``); normalisation happens on the device.
    """
    return TrainAugmentation(
        image_size,
        (crop_scale_min, 1.0),
        rand_augment=CachedRandAugment(num_ops=2, magnitude=9, num_magnitude_bins=11, fill=[124, 116, 104]),
        erase_probability=0.25,
    )


def light_train_transform(image_size: int, crop_scale_min: float = 0.5) -> TrainAugmentation:
    """Random resized crop (scale from ``crop_scale_min``) and flip only: for tiny models on the synthetic corpus."""
    return TrainAugmentation(image_size, (crop_scale_min, 1.0))


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
