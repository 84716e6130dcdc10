"""Training transforms: uint8 batches that match torchvision's draws, exact device-side normalisation, and
random erasing quantised into the pixels deterministically."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from mixreorg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CachedRandAugment,
    ToNormalizedTensor,
    build_train_transform,
    noise_to_pixels,
    normalize_pixels,
    to_pixels,
)
from mixreorg.errors import MixreorgError


def _images(count: int, size: tuple[int, int] = (61, 48)) -> list[Image.Image]:
    """JPEG round-tripped gradients with edges, so crops and resizes have detail to get wrong."""
    images = []
    for i in range(count):
        y, x = np.mgrid[0 : size[1], 0 : size[0]]
        pixels = np.stack([(x * 4 + 17 * i) % 256, (y * 5) % 256, ((x // 8 + y // 8) % 2) * 200 + i], axis=-1)
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG")
        images.append(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return images


def _float_path(pixels: torch.Tensor) -> torch.Tensor:
    """What the loader used to ship: a contiguous float batch normalised in the worker."""
    return normalize_pixels(pixels.contiguous(), out=torch.empty(pixels.shape, dtype=torch.float32))


def test_crops_and_flips_draw_as_torchvision_and_match_it_within_one_level():
    torch.set_num_threads(1)
    images = _images(12)
    reference_ops = T.Compose([
        T.RandomResizedCrop(20, scale=(0.3, 1.0), interpolation=T.InterpolationMode.BILINEAR),
        T.RandomHorizontalFlip(),
    ])
    torch.manual_seed(4)
    reference = torch.stack([to_pixels(reference_ops(image)) for image in images])
    after_reference = torch.rand(1)
    torch.manual_seed(4)
    pixels = build_train_transform("light", 20, 0.3).batch(images)
    assert torch.equal(torch.rand(1), after_reference)  # the same number of draws from the generator
    assert pixels.shape == (12, 3, 20, 20) and pixels.dtype == torch.uint8
    assert pixels.is_contiguous(memory_format=torch.channels_last)
    assert (pixels.int() - reference.int()).abs().max() <= 1  # so every crop and flip went as torchvision's


def test_cached_rand_augment_is_torchvisions():
    images = _images(24, size=(32, 32))
    options = dict(num_ops=2, magnitude=9, num_magnitude_bins=11, fill=[124, 116, 104])
    outputs = []
    for rand_augment in (T.RandAugment(**options), CachedRandAugment(**options)):
        torch.manual_seed(5)
        outputs.append([np.asarray(rand_augment(image)) for image in images])
    assert all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))
    assert sum(not np.array_equal(a, np.asarray(i)) for a, i in zip(outputs[1], images, strict=True)) > 12


def test_device_normalisation_equals_the_float_path_exactly():
    images = _images(6)
    transform = build_train_transform("groupvit", 24, 0.5)
    transform.erase_probability = 0.0
    torch.manual_seed(2)
    pixels = transform.batch(images)
    normalized = normalize_pixels(pixels)
    assert normalized.is_contiguous() and normalized.dtype == torch.float32
    assert torch.equal(normalized, _float_path(pixels))
    single = transform(images[0])  # one image -> one normalised float image, for any other caller
    assert single.shape == (3, 24, 24) and single.dtype == torch.float32
    reference = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(images[0])
    assert torch.allclose(ToNormalizedTensor()(images[0]), reference, atol=1e-5)


def test_trainer_normalises_uint8_batches_on_its_device():
    from mixreorg.config import load_config
    from mixreorg.training.distributed import DistEnv
    from mixreorg.training.trainer import Trainer

    cfg = load_config("tiny", ["train.batch_size=4"])
    transform = build_train_transform("light", cfg.model.vision.image_size, 0.5)
    torch.manual_seed(1)
    pixels = [transform.batch(_images(4)), transform.batch(_images(8)[4:])]  # two steps: the buffer is reused
    texts = torch.randint(1, 4000, (4, 1, cfg.model.text.context_length))
    results = []
    for batches in (pixels, [_float_path(p) for p in pixels]):
        torch.manual_seed(0)
        trainer = Trainer(cfg, DistEnv(), torch.device("cpu"), warmup_steps=0, total_steps=2)
        losses = [trainer.train_step([(images, texts)]).loss for images in batches]
        results.append((losses, trainer.model.state_dict()))
    (losses_uint8, state_uint8), (losses_float, state_float) = results
    assert losses_uint8 == losses_float and losses_float[0] != losses_float[1]
    assert all(torch.equal(state_uint8[key], state_float[key]) for key in state_float)


def test_random_erasing_is_seeded_and_writes_the_pixels_of_the_noise():
    images = _images(16)
    transform = build_train_transform("groupvit", 32, 0.5)
    torch.manual_seed(11)
    erased = transform.batch(images)
    torch.manual_seed(11)
    assert torch.equal(transform.batch(images), erased)
    # The same draws through torchvision: RandAugment'd pixels without erasing, then RandomErasing on the float
    # images, continuing from the same generator state.
    transform.erase_probability = 0.0
    torch.manual_seed(11)
    plain = transform.batch(images)
    reference = _float_path(plain)
    erasing = T.RandomErasing(p=0.25, value="random", inplace=True)
    for image in reference:
        erasing(image)
    boxes = (reference != _float_path(plain)).any(dim=1, keepdim=True).expand_as(reference)
    assert 0 < int(boxes.any(dim=(1, 2, 3)).sum()) < 16  # some images erased, some not
    assert torch.equal(erased[~boxes], plain[~boxes])
    assert torch.equal(erased[boxes], noise_to_pixels(reference)[boxes])
    # the mapping itself: mean*255 + std*255*z, rounded, clipped to the pixel range
    z = torch.tensor([0.0, 1.0, -1.0, 5.0, -5.0]).view(1, 1, 5).expand(3, 1, 5)
    expected = [[round(255 * (m + s * v)) for v in (0.0, 1.0, -1.0)] + [255, 0] for m, s in zip(
        IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert noise_to_pixels(z).view(3, 5).tolist() == expected
    quantised = normalize_pixels(noise_to_pixels(z))
    assert torch.allclose(quantised[..., :3], z[..., :3], atol=0.5 / (255 * 0.224) + 1e-6)


def test_unknown_augmentation_and_bad_crop_scale_are_errors():
    with pytest.raises(MixreorgError, match="unknown data.augmentation"):
        build_train_transform("heavy", 24, 0.5)
    with pytest.raises(MixreorgError, match="crop_scale_min"):
        build_train_transform("light", 24, 0.0)
