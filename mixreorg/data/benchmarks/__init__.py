"""Benchmark datasets for zero-shot evaluation: manifests, fetching/preparation and loaders.

    from mixreorg.data.benchmarks import get_benchmark
    voc = get_benchmark("voc", "data/")          # mmsegmentation-style data root
    image, label, sample_id = voc[0]             # uint8 HxWx3 RGB, uint8 HxW (255 = ignore), str
"""

from mixreorg.data.benchmarks.base import ClassificationBenchmark, SegmentationBenchmark
from mixreorg.data.benchmarks.fetch import fetch_benchmark_data, is_fetched
from mixreorg.data.benchmarks.manifest import BenchmarkSpec, load_manifest
from mixreorg.data.benchmarks.registry import (
    CLASSIFICATION_BENCHMARKS,
    SEGMENTATION_BENCHMARKS,
    get_benchmark,
    get_benchmark_spec,
    get_classification_benchmark,
)

__all__ = [
    "CLASSIFICATION_BENCHMARKS",
    "SEGMENTATION_BENCHMARKS",
    "BenchmarkSpec",
    "ClassificationBenchmark",
    "SegmentationBenchmark",
    "fetch_benchmark_data",
    "get_benchmark",
    "get_benchmark_spec",
    "get_classification_benchmark",
    "is_fetched",
    "load_manifest",
]
