"""Cityscapes val, 19 classes (trainIds, 255 = ignore). Needs a login, so the files come in with ``--from``.

Layout (mmsegmentation): ``cityscapes/leftImg8bit/val/<city>/<name>_leftImg8bit.png`` and
``cityscapes/gtFine/val/<city>/<name>_gtFine_labelTrainIds.png``. Preparation writes the labelTrainIds files from
the shipped ``*_gtFine_labelIds.png`` with cityscapesScripts' id -> trainId table (in the manifest), so the
cityscapesScripts package is not needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mixreorg.data.benchmarks.base import Sample, SegmentationBenchmark, checked_samples, find_dataset_dir, require
from mixreorg.data.benchmarks.manifest import benchmark_spec
from mixreorg.utils.io import atomic_path
from mixreorg.utils.progress import progress_bar

DATASET = "cityscapes"
BENCHMARKS = ("cityscapes",)
CANDIDATES = ("cityscapes", ".")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
PREPARED_SPLITS = ("train", "val")


def load(benchmark: str, root: Path) -> SegmentationBenchmark:
    spec = benchmark_spec(DATASET, benchmark)
    folder = find_dataset_dir(root, CANDIDATES, f"leftImg8bit/{spec.split}", DATASET)
    labels = require(folder / "gtFine" / spec.split, DATASET, root, "fine annotations")
    images = sorted((folder / "leftImg8bit" / spec.split).glob(f"*/*{IMAGE_SUFFIX}"))
    samples = []
    for path in images:
        name = path.name[: -len(IMAGE_SUFFIX)]
        samples.append(Sample(name, path, labels / path.parent.name / f"{name}{LABEL_SUFFIX}"))
    return SegmentationBenchmark(spec, checked_samples(samples, DATASET, root), folder)


def prepare(root: Path, manifest: dict, files: dict[str, Path]) -> None:
    """Write ``*_gtFine_labelTrainIds.png`` beside every ``*_gtFine_labelIds.png`` of train and val."""
    folder = find_dataset_dir(root, CANDIDATES, "gtFine", DATASET)
    table = np.full(256, 255, dtype=np.uint8)
    for label_id, train_id in manifest["label_id_to_train_id"].items():
        table[int(label_id)] = train_id
    sources = [p for split in PREPARED_SPLITS for p in sorted((folder / "gtFine" / split).glob("*/*_labelIds.png"))]
    for path in progress_bar(sources, desc="cityscapes labels", unit="img"):
        with Image.open(path) as img:
            ids = np.array(img, dtype=np.uint8)
        with atomic_path(path.with_name(path.name.replace("_labelIds.png", "_labelTrainIds.png"))) as tmp:
            Image.fromarray(table[ids]).save(tmp, format="PNG")
