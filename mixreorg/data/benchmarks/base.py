"""The dataset objects every benchmark loader returns, and the layout checks they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mixreorg.data.benchmarks.manifest import BenchmarkSpec
from mixreorg.errors import MixreorgError


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    label: Path


class SegmentationBenchmark:
    """A semantic segmentation evaluation set whose labels come out final.

    ``dataset[i]`` is ``(image, label, sample_id)``: ``image`` uint8 HxWx3 RGB, ``label`` uint8 HxW holding class
    indices into ``classes`` or ``ignore_index``. ``reduce_zero_label`` (ADE20K, Context-59, VOC-20) is already
    applied: raw 0 became ``ignore_index`` and the other values moved down by one. ``has_background`` is True when
    class 0 is a background that the evaluator produces by thresholding (``protocol['bg_thresh']``).
    """

    def __init__(self, spec: BenchmarkSpec, samples: Sequence[Sample], root: Path,
                 palette_labels: bool = False) -> None:
        self.spec = spec
        self.name = spec.name
        self.classes = list(spec.classes)
        self.palette = [list(rgb) for rgb in spec.palette]
        self.has_background = spec.has_background
        self.ignore_index = spec.ignore_index
        self.reduce_zero_label = spec.reduce_zero_label
        self.protocol = dict(spec.protocol)
        self.protocols = {name: dict(block) for name, block in spec.protocols.items()}
        self.object_classes = list(spec.object_classes)
        self.expected_samples = spec.expected_samples
        self.root = root
        self.samples = list(samples)
        # VOC's palette PNGs read as indices; a copy re-saved as RGB is mapped back through the full palette.
        self._rgb_palette = _full_palette(spec) if palette_labels else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        sample = self.samples[index]
        with Image.open(sample.image) as img:
            image = np.asarray(img.convert("RGB"), dtype=np.uint8)
        label = read_label(sample.label, self._rgb_palette, self.ignore_index)
        if self.reduce_zero_label:
            label = reduce_zero_label(label, self.ignore_index)
        if label.shape != image.shape[:2]:
            raise MixreorgError(
                f"{sample.label} is {label.shape[1]}x{label.shape[0]} but its image {sample.image} is "
                f"{image.shape[1]}x{image.shape[0]}; the label does not belong to this image"
            )
        return image, label, sample.id

    def __repr__(self) -> str:
        return f"SegmentationBenchmark({self.name!r}, {len(self)} samples, {len(self.classes)} classes, {self.root})"


class ClassificationBenchmark:
    """An image classification set in ImageFolder layout: ``dataset[i]`` is ``(image, class_index, sample_id)``."""

    def __init__(self, name: str, classes: Sequence[str], samples: Sequence[tuple[Path, int]], root: Path,
                 wnids: Sequence[str] = (), expected_samples: int | None = None) -> None:
        self.name = name
        self.classes = list(classes)
        self.wnids = list(wnids)
        self.samples = list(samples)
        self.root = root
        self.expected_samples = expected_samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, str]:
        path, target = self.samples[index]
        with Image.open(path) as img:
            image = np.asarray(img.convert("RGB"), dtype=np.uint8)
        return image, target, path.stem

    def __repr__(self) -> str:
        return f"ClassificationBenchmark({self.name!r}, {len(self)} samples, {len(self.classes)} classes)"


def read_label(path: Path, rgb_palette: np.ndarray | None = None, ignore_index: int = 255) -> np.ndarray:
    """A label PNG as uint8 class values; RGB files are decoded through ``rgb_palette`` (unknown colours -> ignore)."""
    with Image.open(path) as img:
        if img.mode in ("P", "L"):
            return np.array(img, dtype=np.uint8)  # palette PNGs: PIL gives the indices, never the colours
        if img.mode in ("RGB", "RGBA") and rgb_palette is not None:
            rgb = np.asarray(img.convert("RGB"), dtype=np.int64)
            codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            keys = (rgb_palette[:, 0] << 16) | (rgb_palette[:, 1] << 8) | rgb_palette[:, 2]
            lookup = dict(zip(keys.tolist(), range(len(keys)), strict=True))
            values, inverse = np.unique(codes, return_inverse=True)
            mapped = np.array([lookup.get(int(v), ignore_index) for v in values], dtype=np.uint8)
            return mapped[inverse].reshape(codes.shape)
        array = np.array(img)
    if array.ndim != 2 or array.max(initial=0) > 255 or array.min(initial=0) < 0:
        raise MixreorgError(f"{path} is not a single-channel 8-bit label map (mode {img.mode}); re-run the preparation")
    return array.astype(np.uint8)


def reduce_zero_label(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """mmseg's reduce_zero_label: 0 ('other'/background) -> ignore, every other class value -1."""
    out = label.astype(np.int16) - 1
    out[label == 0] = ignore_index
    out[label == ignore_index] = ignore_index
    return out.astype(np.uint8)


def _full_palette(spec: BenchmarkSpec) -> np.ndarray:
    palette = np.array(spec.palette, dtype=np.int64).reshape(-1, 3)
    if spec.reduce_zero_label:  # the files still hold the raw values, so colour 0 (background) comes back first
        palette = np.concatenate([np.zeros((1, 3), dtype=np.int64), palette])
    boundary = np.array([[224, 224, 192]], dtype=np.int64)  # VOC's 'void' outline colour, value 255
    table = np.full((256, 3), -1, dtype=np.int64)
    table[: len(palette)] = palette
    table[255] = boundary
    return table


def fetch_hint(name: str, root: Path) -> str:
    if name == "synthetic":
        return f"run `mixreorg data synth --out {root}` to write the synthetic corpus and its eval set"
    return (
        f"run `mixreorg data fetch {name} --root {root}`, or point eval's --data-root (train.eval_data_root when "
        "training) at an existing mmsegmentation data folder"
    )


def find_dataset_dir(root: Path, candidates: Sequence[str], marker: str, fetch_name: str) -> Path:
    """The first ``root/candidate`` that holds ``marker``; else MixreorgError naming the expected path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MixreorgError(f"data root {root} does not exist; {fetch_hint(fetch_name, root)}")
    for candidate in candidates:
        folder = (root / candidate).resolve()
        if (folder / marker).exists():
            return folder
    expected = root / candidates[0] / marker
    raise MixreorgError(f"expected {expected} (not found); {fetch_hint(fetch_name, root)}")


def require(path: Path, fetch_name: str, root: Path, what: str = "") -> Path:
    if not path.exists():
        extra = f" ({what})" if what else ""
        raise MixreorgError(f"expected {path}{extra} (not found); {fetch_hint(fetch_name, root)}")
    return path


def read_split(path: Path, fetch_name: str, root: Path) -> list[str]:
    require(path, fetch_name, root, "the list of image ids")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise MixreorgError(f"{path} lists no image ids; {fetch_hint(fetch_name, root)}")
    return ids


def checked_samples(samples: list[Sample], fetch_name: str, root: Path) -> list[Sample]:
    """Refuse a set with missing files up front, naming the first one, instead of failing mid-evaluation."""
    if not samples:
        raise MixreorgError(f"no samples found under {root}; {fetch_hint(fetch_name, root)}")
    for kind in ("image", "label"):
        missing = [getattr(s, kind) for s in samples if not getattr(s, kind).is_file()]
        if missing:
            raise MixreorgError(
                f"expected {missing[0]} ({len(missing)} of {len(samples)} {kind} files missing); "
                f"{fetch_hint(fetch_name, root)}"
            )
    return samples

