"""The synthetic evaluation set written by ``mixreorg data synth`` (exact labels, no background class).

Layout: ``ROOT/eval/images/<id>.png``, ``ROOT/eval/annotations/<id>.png`` (uint8 class index, 255 = ignore) and
``ROOT/eval/classes.json`` = ``{"classes": [...], "palette": [[r, g, b], ...], "has_background": false,
"objects": [...]}`` (the object classes; the rest are backgrounds).
``root`` may be the corpus folder or its ``eval/`` folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from mixreorg.data.benchmarks.base import Sample, SegmentationBenchmark, checked_samples, require
from mixreorg.data.benchmarks.manifest import BenchmarkSpec
from mixreorg.errors import MixreorgError

DATASET = "synthetic"
BENCHMARKS = ("synthetic",)


def load(benchmark: str, root: Path) -> SegmentationBenchmark:
    root = Path(root).expanduser()
    folder = root / "eval" if (root / "eval" / "classes.json").is_file() else root
    if not (folder / "classes.json").is_file():
        folder = root / "eval"
    meta_path = require(folder / "classes.json", DATASET, root, "class list")
    try:
        meta = json.loads(meta_path.read_text())
        classes = [str(name) for name in meta["classes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise MixreorgError(f"{meta_path} is not a synthetic class list ({exc}); run `mixreorg data synth`") from exc
    images = sorted(require(folder / "images", DATASET, root, "eval images").glob("*.png"))
    samples = [Sample(p.stem, p, folder / "annotations" / p.name) for p in images]
    spec = BenchmarkSpec(
        name=benchmark,
        dataset=DATASET,
        split="eval",
        expected_samples=int(meta.get("num_images", len(samples))),
        classes=tuple(classes),
        palette=tuple(tuple(rgb) for rgb in meta.get("palette") or ()),
        has_background=bool(meta.get("has_background", False)),
        reduce_zero_label=False,
        ignore_index=int(meta.get("ignore_index", 255)),
        protocol=dict(meta.get("protocol") or {}),
        object_classes=tuple(str(name) for name in meta.get("objects") or ()),
    )
    return SegmentationBenchmark(spec, checked_samples(samples, DATASET, root), folder)
