"""PASCAL VOC 2012 val: ``voc`` (background + 20, background by thresholding) and ``voc20`` (20, background ignored).

Layout (mmsegmentation): ``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt}``.
The official tar already holds it. SegmentationClass PNGs are palette images whose indices are the labels
(255 = object outline), so they are read as indices and need no rewriting.
"""

from __future__ import annotations

from pathlib import Path

from mixreorg.data.benchmarks.base import (
    Sample,
    SegmentationBenchmark,
    checked_samples,
    find_dataset_dir,
    read_split,
)
from mixreorg.data.benchmarks.manifest import benchmark_spec

DATASET = "voc"
BENCHMARKS = ("voc", "voc20")
CANDIDATES = ("VOCdevkit/VOC2012", "VOC2012", ".")


def load(benchmark: str, root: Path) -> SegmentationBenchmark:
    spec = benchmark_spec(DATASET, benchmark)
    folder = find_dataset_dir(root, CANDIDATES, "JPEGImages", DATASET)
    ids = read_split(folder / "ImageSets" / "Segmentation" / f"{spec.split}.txt", DATASET, root)
    samples = [Sample(i, folder / "JPEGImages" / f"{i}.jpg", folder / "SegmentationClass" / f"{i}.png") for i in ids]
    return SegmentationBenchmark(spec, checked_samples(samples, DATASET, root), folder, palette_labels=True)


def prepare(root: Path, manifest: dict, files: dict[str, Path]) -> None:
    """Nothing to convert: the labels are read as palette indices (the loaders check the layout afterwards)."""
