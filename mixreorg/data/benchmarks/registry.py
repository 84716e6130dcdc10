"""Benchmark names -> loaders: ``get_benchmark("voc", root)``, ``get_classification_benchmark("imagenet", root)``."""

from __future__ import annotations

from pathlib import Path

from mixreorg.data.benchmarks import ade20k, cityscapes, coco, context, imagenet, synthetic, voc
from mixreorg.data.benchmarks.base import ClassificationBenchmark, SegmentationBenchmark
from mixreorg.data.benchmarks.manifest import BenchmarkSpec, benchmark_spec
from mixreorg.errors import MixreorgError

_SEGMENTATION = {name: module for module in (voc, context, coco, ade20k, cityscapes, synthetic)
                 for name in module.BENCHMARKS}
SEGMENTATION_BENCHMARKS: tuple[str, ...] = tuple(_SEGMENTATION)
CLASSIFICATION_BENCHMARKS: tuple[str, ...] = imagenet.BENCHMARKS


def get_benchmark(name: str, root: str | Path) -> SegmentationBenchmark:
    """The segmentation benchmark ``name`` read from data root ``root`` (an mmsegmentation-style ``data/``).

    Names: voc, voc20, context, context59, coco-object, coco-stuff, ade20k, cityscapes, synthetic. The layout is
    checked here; a missing folder or file raises MixreorgError naming the path and the fetch command.
    """
    module = _SEGMENTATION.get(name)
    if module is None:
        raise MixreorgError(f"unknown benchmark '{name}'; expected one of {', '.join(SEGMENTATION_BENCHMARKS)}")
    return module.load(name, Path(root))


def get_classification_benchmark(name: str, root: str | Path) -> ClassificationBenchmark:
    """The classification benchmark ``name`` (imagenet) read from ``root``."""
    if name not in CLASSIFICATION_BENCHMARKS:
        expected = ", ".join(CLASSIFICATION_BENCHMARKS)
        raise MixreorgError(f"unknown classification benchmark '{name}'; expected {expected}")
    return imagenet.load(name, Path(root))


def get_benchmark_spec(name: str) -> BenchmarkSpec:
    """Classes, palette and protocol of a manifest benchmark without touching any data (not 'synthetic')."""
    module = _SEGMENTATION.get(name)
    if module is None or module is synthetic:
        raise MixreorgError(f"no manifest for benchmark '{name}'; the synthetic set carries its own classes.json")
    return benchmark_spec(module.DATASET, name)
