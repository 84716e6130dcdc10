"""`mixreorg segment`'s settings against `mixreorg eval`'s on the demo model: accuracy, agreement, time, precision.

    make demo                                                   # trains demo/run/model on demo/data
    .venv/bin/python benchmarks/bench_segment_settings.py       # writes results/segment_settings_cpu.{json,md}

On the first ``--images`` synthetic evaluation images it runs eval's ``groupvit`` protocol (the same core
functions as ``mixreorg eval``) and then the ``Predictor`` (what ``mixreorg segment`` calls) with: its defaults,
the settings segment used before it took the model's resolution (short side 448, window 448, stride 224),
those with ``--size 192``, a window of twice the training size (the published protocol's ratio to a 224 px
model), and its defaults in bf16. Each row gives pixel accuracy and mIoU against the true
maps, the share of pixels whose label equals eval's, and seconds per image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def _shown(path: Path) -> str:
    """The path relative to the repository when it lies inside it (results files are committed)."""
    try:
        return str(path.absolute().relative_to(ROOT))
    except ValueError:
        return str(path)


def score(maps: list[np.ndarray], truths: list[np.ndarray], classes: list[str]) -> dict:
    from mixreorg.evaluation.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(len(classes), "cpu", 255)
    for prediction, truth in zip(maps, truths, strict=True):
        matrix.update(torch.from_numpy(prediction.astype(np.int64)), torch.from_numpy(truth.astype(np.int64)))
    metrics = matrix.scores(classes).as_dict()
    return {"pixel_accuracy": round(metrics["pixel_accuracy"], 2), "miou": round(metrics["miou"], 2)}


def agreement(maps: list[np.ndarray], reference: list[np.ndarray]) -> float:
    same = sum(int((a == b).sum()) for a, b in zip(maps, reference, strict=True))
    return round(100 * same / sum(a.size for a in reference), 2)


def run(args: argparse.Namespace) -> dict:
    from mixreorg.data.benchmarks import get_benchmark
    from mixreorg.evaluation.protocols import resolve_protocol
    from mixreorg.evaluation.segmentation import protocol_scorer, slide_settings
    from mixreorg.evaluation.sliding import segment_images
    from mixreorg.inference.predictor import Predictor, load_for_inference

    torch.set_num_threads(args.threads)
    model, _ = load_for_inference(args.checkpoint)
    benchmark = get_benchmark("synthetic", args.data)
    classes = list(benchmark.classes)
    samples = benchmark.samples[: args.images]
    paths = [sample.image for sample in samples]
    truths = [np.array(Image.open(sample.label)) for sample in samples]
    images = [torch.from_numpy(np.array(Image.open(path).convert("RGB"))) for path in paths]

    protocol = resolve_protocol("groupvit", "synthetic", False, model.cfg.vision.image_size)
    scorer = protocol_scorer(model, classes, protocol, False)
    segment_images(images[:1], scorer, slide_settings(protocol, 8))  # warm-up, as below
    start = time.perf_counter()
    eval_maps = [m.numpy() for m in segment_images(images, scorer, slide_settings(protocol, 8))]
    rows = [{"setting": "eval: groupvit protocol on the synthetic set", "short_side": protocol.short_side,
             "crop": protocol.crop, "stride": protocol.stride, "precision": "fp32",
             **score(eval_maps, truths, classes), "agrees_with_eval": 100.0,
             "seconds_per_image": round((time.perf_counter() - start) / len(paths), 4)}]
    variants = [
        ("segment: defaults (the model's protocol)", {}),
        ("segment before this change: 448 / 448 / 224", dict(size=448, crop=448, stride=224)),
        ("segment before this change with --size 192", dict(size=192, crop=448, stride=224)),
        ("window twice the training size, as the published protocol's", dict(crop=128, stride=64)),
        ("segment: defaults in bf16", dict(precision="bf16")),
    ]
    maps_by_name = {}
    for name, options in variants:
        predictor = Predictor(model, device="cpu", **options)
        predictor.set_labels(classes)
        predictor.predict(paths[0])  # warm-up: the first forward pass pays one-off costs
        start = time.perf_counter()
        maps = [result.label_map for result in predictor.predict(paths)]
        seconds = (time.perf_counter() - start) / len(paths)
        used = predictor.protocol()
        maps_by_name[name] = maps
        rows.append({"setting": name, "short_side": used.short_side, "crop": used.crop, "stride": used.stride,
                     "precision": predictor.precision, **score(maps, truths, classes),
                     "agrees_with_eval": agreement(maps, eval_maps), "seconds_per_image": round(seconds, 4)})
    bf16_vs_fp32 = agreement(maps_by_name["segment: defaults in bf16"], maps_by_name[variants[0][0]])
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint": _shown(args.checkpoint),
        "images": len(paths),
        "threads": args.threads,
        "machine": f"{cpu}, {os.cpu_count()} cores (shared), load average after {os.getloadavg()}",
        "torch": torch.__version__,
        "rows": rows,
        "bf16_agrees_with_fp32": bf16_vs_fp32,
    }


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        f"# Segment settings vs eval's, demo model ({result['created']})", "",
        f"{result['images']} synthetic evaluation images, checkpoint {result['checkpoint']}, {result['threads']} "
        f"threads; {result['machine']}; torch {result['torch']}.", "",
        "| setting | short side | window | stride | precision | pixel accuracy | mIoU | pixels equal to eval's (%) "
        "| s / image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['setting']} | {row['short_side']} | {row['crop']} | {row['stride']} | {row['precision']} "
                     f"| {row['pixel_accuracy']} | {row['miou']} | {row['agrees_with_eval']} "
                     f"| {row['seconds_per_image']} |")
    lines += ["", f"bf16 label maps equal the fp32 ones on {result['bf16_agrees_with_fp32']}% of pixels.",
              "Seconds per image after one warm-up image each; on a shared machine they move by 2x between runs, so "
              "read the accuracy columns (deterministic) before the times.", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "demo" / "run" / "model")
    parser.add_argument("--data", type=Path, default=ROOT / "demo" / "data")
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "segment_settings_cpu.json")
    args = parser.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
