"""PASCAL Context val: ``context`` (60 incl. background) and ``context59`` (background ignored).

Layout (mmsegmentation): ``VOCdevkit/VOC2010/{JPEGImages, SegmentationClassContext/*.png,
ImageSets/SegmentationContext/{train,val}.txt}``. The labels are built from ``trainval_merged.json`` with
pycocotools alone (no Detail API): each annotation's COCO RLE mask is painted with its raw category id, in file
order, on zeros; raw ids then map to 0..59 by their position in the manifest's ``raw_id_mapping`` (mmseg's sorted
``_mapping``), and ids outside it become 255.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from mixreorg.data.benchmarks.base import (
    Sample,
    SegmentationBenchmark,
    checked_samples,
    find_dataset_dir,
    read_split,
    require,
)
from mixreorg.data.benchmarks.manifest import benchmark_spec
from mixreorg.errors import MixreorgError
from mixreorg.utils.io import atomic_path, atomic_write_text
from mixreorg.utils.progress import progress_bar

DATASET = "context"
BENCHMARKS = ("context", "context59")
CANDIDATES = ("VOCdevkit/VOC2010", "VOC2010", ".")
JSON_NAME = "trainval_merged.json"


def load(benchmark: str, root: Path) -> SegmentationBenchmark:
    spec = benchmark_spec(DATASET, benchmark)
    folder = find_dataset_dir(root, CANDIDATES, "JPEGImages", DATASET)
    ids = read_split(folder / "ImageSets" / "SegmentationContext" / f"{spec.split}.txt", DATASET, root)
    labels = folder / "SegmentationClassContext"
    samples = [Sample(i, folder / "JPEGImages" / f"{i}.jpg", labels / f"{i}.png") for i in ids]
    return SegmentationBenchmark(spec, checked_samples(samples, DATASET, root), folder)


def prepare(root: Path, manifest: dict, files: dict[str, Path]) -> None:
    """Write SegmentationClassContext/*.png and the split lists from trainval_merged.json."""
    folder = find_dataset_dir(root, CANDIDATES, "JPEGImages", DATASET)
    json_path = folder / JSON_NAME
    if JSON_NAME in files and files[JSON_NAME].resolve() != json_path.resolve():
        with atomic_path(json_path) as tmp:
            shutil.copyfile(files[JSON_NAME], tmp)
    require(json_path, DATASET, root, "PASCAL Context annotations")
    write_context_labels(json_path, folder, manifest["raw_id_mapping"])


def write_context_labels(json_path: Path, folder: Path, raw_id_mapping: list[int]) -> dict[str, int]:
    """Paint every image's masks from ``json_path`` into ``folder/SegmentationClassContext``; returns split sizes."""
    try:
        data = json.loads(json_path.read_text())
        images, annotations = data["images"], data["annos_segmentation"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MixreorgError(f"{json_path} is not PASCAL Context's {JSON_NAME} ({exc}); fetch it again") from exc
    lookup = np.full(max(max(raw_id_mapping), max((a["category_id"] for a in annotations), default=0)) + 1, 255,
                     dtype=np.uint8)
    lookup[np.asarray(raw_id_mapping)] = np.arange(len(raw_id_mapping), dtype=np.uint8)
    by_image: dict[object, list[dict]] = defaultdict(list)
    for annotation in annotations:
        by_image[annotation["image_id"]].append(annotation)

    out_dir = folder / "SegmentationClassContext"
    out_dir.mkdir(exist_ok=True)
    splits: dict[str, list[str]] = defaultdict(list)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)  # pycocotools vs numpy 2
        for image in progress_bar(images, desc="context labels", unit="img"):
            height, width = int(image["height"]), int(image["width"])
            raw = np.zeros((height, width), dtype=np.int32)
            for annotation in by_image.get(image["image_id"], ()):
                raw[_decode(annotation["segmentation"], height, width) != 0] = annotation["category_id"]
            stem = Path(image["file_name"]).stem
            with atomic_path(out_dir / f"{stem}.png") as tmp:
                Image.fromarray(lookup[raw]).save(tmp, format="PNG")
            splits[str(image.get("phase", "val"))].append(stem)

    split_dir = folder / "ImageSets" / "SegmentationContext"
    split_dir.mkdir(parents=True, exist_ok=True)
    for phase, stems in splits.items():
        atomic_write_text(split_dir / f"{phase}.txt", "".join(f"{s}\n" for s in sorted(stems)))
    return {phase: len(stems) for phase, stems in splits.items()}


def _decode(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):  # polygons
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width)))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        segmentation = mask_utils.frPyObjects(segmentation, height, width)
    return mask_utils.decode(segmentation)
