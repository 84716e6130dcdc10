"""ADE20K SceneParsing val, 150 classes with ``reduce_zero_label`` (raw 0 'other' -> ignore, others -1).

Layout (mmsegmentation): ``ade/ADEChallengeData2016/{images,annotations}/validation/ADE_val_*.{jpg,png}``; the
official zip holds ``ADEChallengeData2016/`` as is.
"""

from __future__ import annotations

from pathlib import Path

from mixreorg.data.benchmarks.base import Sample, SegmentationBenchmark, checked_samples, find_dataset_dir, require
from mixreorg.data.benchmarks.manifest import benchmark_spec

DATASET = "ade20k"
BENCHMARKS = ("ade20k",)
CANDIDATES = ("ade/ADEChallengeData2016", "ADEChallengeData2016", ".")


def load(benchmark: str, root: Path) -> SegmentationBenchmark:
    spec = benchmark_spec(DATASET, benchmark)
    folder = find_dataset_dir(root, CANDIDATES, f"images/{spec.split}", DATASET)
    require(folder / "annotations" / spec.split, DATASET, root, "label PNGs")
    images = sorted((folder / "images" / spec.split).glob("*.jpg"))
    samples = [Sample(p.stem, p, folder / "annotations" / spec.split / f"{p.stem}.png") for p in images]
    return SegmentationBenchmark(spec, checked_samples(samples, DATASET, root), folder)


def prepare(root: Path, manifest: dict, files: dict[str, Path]) -> None:
    """Nothing to convert: reduce_zero_label is applied by the loader, as mmsegmentation does."""
