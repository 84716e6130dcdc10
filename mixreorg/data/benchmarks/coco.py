"""COCO 2017 val from COCO-Stuff-164k maps: ``coco-object`` (background + 80) and ``coco-stuff`` (171).

Layout: ``coco_stuff164k/images/val2017/*.jpg`` and ``coco_stuff164k/annotations/val2017/<id>.png`` (the raw
stuffthingmaps: value = COCO category id - 1, 255 = unlabeled). Preparation writes, beside each raw map:
- ``<id>_labelTrainIds.png`` (mmseg COCO-Stuff-164k): the 171 used values in order -> 0..170, 255 stays 255;
- ``<id>_instanceTrainIds.png`` (GroupViT COCO-Object): thing values -> 1..80, stuff and unlabeled -> 0.
GroupViT's own ``coco/`` folder with only ``*_instanceTrainIds.png`` is read as well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mixreorg.data.benchmarks.base import Sample, SegmentationBenchmark, checked_samples, find_dataset_dir, require
from mixreorg.data.benchmarks.manifest import benchmark_spec
from mixreorg.utils.io import atomic_path
from mixreorg.utils.progress import progress_bar

DATASET = "coco"
BENCHMARKS = ("coco-object", "coco-stuff")
CANDIDATES = ("coco_stuff164k", "coco", ".")
SUFFIXES = {"coco-object": "_instanceTrainIds.png", "coco-stuff": "_labelTrainIds.png"}


def load(benchmark: str, root: Path) -> SegmentationBenchmark:
    spec = benchmark_spec(DATASET, benchmark)
    folder = find_dataset_dir(root, CANDIDATES, f"images/{spec.split}", DATASET)
    labels = require(folder / "annotations" / spec.split, DATASET, root, "label PNGs")
    images = sorted((folder / "images" / spec.split).glob("*.jpg"))
    samples = [Sample(p.stem, p, labels / f"{p.stem}{SUFFIXES[benchmark]}") for p in images]
    return SegmentationBenchmark(spec, checked_samples(samples, DATASET, root), folder)


def label_tables(manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """256-entry lookup tables raw map value -> (COCO-Stuff-171 label, COCO-Object label)."""
    unused = set(manifest["unused_map_values"])
    used = [value for value in range(182) if value not in unused]
    stuff = np.full(256, 255, dtype=np.uint8)
    stuff[used] = np.arange(len(used), dtype=np.uint8)
    things = [value for value in used if value <= manifest["thing_max_value"]]
    objects = np.zeros(256, dtype=np.uint8)  # stuff, unlabeled (255) and unused values are background
    objects[things] = np.arange(1, len(things) + 1, dtype=np.uint8)
    return stuff, objects


def prepare(root: Path, manifest: dict, files: dict[str, Path]) -> None:
    """Write ``*_labelTrainIds.png`` and ``*_instanceTrainIds.png`` next to every raw val map."""
    folder = find_dataset_dir(root, CANDIDATES, "annotations", DATASET)
    split = benchmark_spec(DATASET, "coco-stuff").split
    maps = sorted(p for p in require(folder / "annotations" / split, DATASET, root).glob("*.png")
                  if not p.stem.endswith("TrainIds"))
    stuff, objects = label_tables(manifest)
    for raw_path in progress_bar(maps, desc="coco labels", unit="img"):
        with Image.open(raw_path) as img:
            raw = np.array(img, dtype=np.uint8)
        for table, suffix in ((stuff, SUFFIXES["coco-stuff"]), (objects, SUFFIXES["coco-object"])):
            with atomic_path(raw_path.with_name(raw_path.stem + suffix)) as tmp:
                Image.fromarray(table[raw]).save(tmp, format="PNG")
