"""The training-free methods against our GroupViT: CPU latency per 448 px image, and the eight-benchmark table on a GPU.

    .venv/bin/python benchmarks/bench_training_free.py          # CPU: results/training_free_cpu.{json,md}
    .venv/bin/python benchmarks/bench_training_free.py --gpu \\
        --data-root data --checkpoint group_vit_gcc_yfcc_30e     # GPU: results/training_free_gpu.{json,md}

CPU mode (``--threads`` 2, one run: a warm-up, then ``--repeats`` timed calls, median reported): open_clip's
ViT-B-16 architecture with random weights (latency does not depend on them, and nothing is downloaded) under each
method, against ``groupvit_vits16`` (random weights). Two figures per model, labels "cat, dog, sky" embedded once:

- window: the dense scores of one 448x448 window (the backend's crop scorer on one crop; ViT-B/16 sees 784
  patches, GroupViT-S/16 784 tokens grouped to 64 then 8 segments);
- segment: ``Predictor.predict`` on a 448x448 image at the model's own protocol: sclip for the methods (resized to
  336x336, four 224 windows, softmax readout), groupvit for GroupViT (one 448 window).

The ratio is the method's time over GroupViT's.

GPU mode: ``mixreorg eval`` (the same ``run_evaluation``) of every method on the eight benchmarks under the sclip
protocol (NACLIP also with ``--pamr``, as its README reports it), and of ``--checkpoint`` under the same protocol,
from real weights in the Hugging Face cache (``--model``, default openclip:ViT-B-16:openai) and the sets under
``--data-root``; a table of mIoU with the average, beside the figures the methods' authors report (peers.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("plain", "maskclip", "sclip", "clearclip", "naclip")
LABELS = ["cat", "dog", "sky"]
SIZE = 448
EIGHT = ("voc", "context", "coco-object", "voc20", "context59", "coco-stuff", "cityscapes", "ade20k")
# What the methods' authors report on the eight sets with CLIP ViT-B/16 (peers.md section 5: SCLIP's, NACLIP's and
# ClearCLIP's READMEs / DeCLIP Tab. 5); order as EIGHT.
REPORTED = {
    "maskclip": (43.4, 23.2, 20.6, 74.9, 26.4, 16.7, 24.9, 11.9),
    "sclip": (59.6, 31.7, 33.5, 81.5, 34.5, 22.8, 32.3, 16.5),
    "clearclip": (51.8, 32.6, 33.0, 80.9, 35.9, 23.9, 30.0, 16.7),
    "naclip+pamr": (64.1, 35.0, 36.2, 83.0, 38.4, 25.7, 38.3, 19.1),
}


def timed(fn, warmup: int, repeats: int) -> dict[str, float]:
    """Median wall and process-CPU milliseconds per call. On a shared machine the CPU time is the steadier figure
    (a descheduled process accrues none); the wall time is what a user waits."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_ms": round(1000 * statistics.median(wall), 1), "cpu_ms": round(1000 * statistics.median(cpu), 1)}


def backends():
    """(name, backend) for GroupViT and each method, random weights."""
    import open_clip

    from mixreorg.inference.backend import GroupingBackend
    from mixreorg.model import build_model
    from mixreorg.training_free.backend import TrainingFreeBackend

    torch.manual_seed(0)
    yield "groupvit", GroupingBackend(build_model("groupvit_vits16").eval())
    clip = open_clip.create_model("ViT-B-16").eval()  # the architecture only: random weights, no download
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    for method in METHODS:
        yield method, TrainingFreeBackend(clip, method, tokenizer, name="openclip:ViT-B-16 (random weights)")


def run_cpu(args: argparse.Namespace) -> dict:
    from mixreorg.evaluation.protocols import IMAGES, resolve_protocol
    from mixreorg.inference.predictor import Predictor
    from mixreorg.utils.environment import cpu_name

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = np.kron(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.ones((SIZE // 8, SIZE // 8, 1), np.uint8))
    crop = torch.randn(1, 3, SIZE, SIZE)
    rows = {}
    with torch.inference_mode():
        for name, backend in backends():
            protocol_name = "groupvit" if name == "groupvit" else "sclip"
            protocol = resolve_protocol(protocol_name, IMAGES, False, backend.image_size, mean=backend.mean,
                                        std=backend.std)
            embeddings = backend.encode_labels([(label,) for label in LABELS], protocol.templates, protocol.synonyms)
            scorer = backend.crop_scorer(embeddings, protocol)
            predictor = Predictor(backend, device="cpu", protocol=protocol_name)
            predictor.set_labels(LABELS)
            window = timed(lambda: scorer(crop), args.warmup, args.repeats)  # noqa: B023 (called at once)
            segment = timed(lambda: predictor.predict(image), args.warmup, args.repeats)  # noqa: B023
            rows[name] = {"protocol": protocol_name, "windows_per_image": _windows(protocol),
                          **{f"window_{k}": v for k, v in window.items()},
                          **{f"segment_{k}": v for k, v in segment.items()}}
            print(name, rows[name], flush=True)
    for row in rows.values():
        for key in ("window_wall_ms", "window_cpu_ms", "segment_wall_ms", "segment_cpu_ms"):
            row[key.replace("_ms", "_ratio")] = round(row[key] / rows["groupvit"][key], 2)
    return {
        "benchmark": f"latency per {SIZE}x{SIZE} image, {len(LABELS)} labels embedded once, random weights",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats, "rows": rows,
        "machine": {"name": platform.node(), "cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(),
                    "load_average_after": [round(x, 1) for x in os.getloadavg()]},
    }


def _windows(protocol) -> int:
    from mixreorg.evaluation.sliding import plan_windows, rescale_size

    size = rescale_size(SIZE, SIZE, protocol.short_side, protocol.long_side)
    return len(plan_windows([size], protocol.crop, protocol.stride))


def write_cpu_markdown(result: dict, path: Path) -> None:
    machine = result["machine"]
    lines = [
        f"# Training-free methods vs GroupViT: CPU latency ({result['created']})",
        "",
        f"{result['benchmark']}; {result['threads']} threads; machine `{machine['name']}` ({machine['cpu']}, "
        f"{machine['cores']} cores, shared; load average after {', '.join(map(str, machine['load_average_after']))})"
        f"; torch {machine['torch']}. One run: {result['warmup']} warm-up, median of {result['repeats']} calls.",
        "",
        "| model | protocol | windows | one 448 window: wall ms (x GroupViT) | CPU ms (x GroupViT) "
        "| segment a 448 image: wall ms (x GroupViT) | CPU ms (x GroupViT) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        label = "GroupViT-S/16 (groupvit_vits16)" if name == "groupvit" else f"ViT-B/16 + {name}"
        cells = [f"{row[f'{part}_{kind}_ms']} ({row[f'{part}_{kind}_ratio']})" for part in ("window", "segment")
                 for kind in ("wall", "cpu")]
        lines.append(f"| {label} | {row['protocol']} | {row['windows_per_image']} | " + " | ".join(cells) + " |")
    lines += ["", "Window: the backend's dense scores of one 448x448 crop. Segment: `Predictor.predict` at the "
              "model's own protocol (sclip: resize to 336, four 224 windows, softmax readout; groupvit: one 448 "
              "window), labels cached. CPU ms is the process's CPU time (both threads): steadier than the wall "
              "time on this shared machine."]
    path.write_text("\n".join(lines) + "\n")


def run_gpu(args: argparse.Namespace) -> dict:
    from mixreorg.evaluation.run import EvalRequest, run_evaluation

    runs = [(method, dict(model=args.model, method=method, pamr=False)) for method in METHODS]
    runs.append(("naclip+pamr", dict(model=args.model, method="naclip", pamr=True)))
    if args.checkpoint:
        runs.append((f"checkpoint {args.checkpoint}", dict(checkpoint=args.checkpoint)))
    table = {}
    for name, choice in runs:
        request = EvalRequest(dataset="all", checkpoint=choice.get("checkpoint"), data_root=str(args.data_root),
                              protocol="sclip", model=choice.get("model"), method=choice.get("method"),
                              pamr=choice.get("pamr", False), device=args.device, batch_size=args.batch_size,
                              precision=args.precision, limit=args.limit, progress=True)
        report = run_evaluation(request)
        found = {r["dataset"]: r["metrics"]["miou"] for r in report["results"] if r["task"] == "segmentation"}
        seconds = sum(r["seconds"] for r in report["results"])
        table[name] = {"miou": {s: found.get(s) for s in EIGHT}, "seconds": round(seconds, 1),
                       "skipped": report["skipped"], "device": report["device"]}
        print(name, table[name]["miou"], flush=True)
    return {"benchmark": "mIoU on the eight benchmarks, sclip protocol", "model": args.model,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "precision": args.precision,
            "limit": args.limit, "rows": table, "reported": REPORTED}


def write_gpu_markdown(result: dict, path: Path) -> None:
    header = "| run | " + " | ".join(EIGHT) + " | average | authors report (avg) |"
    lines = [f"# Eight benchmarks, sclip protocol ({result['created']})", "",
             f"{result['model']}, {result['precision']}" + (f", first {result['limit']} images" if result["limit"]
                                                             else ""), "", header, "|---" * (len(EIGHT) + 3) + "|"]
    for name, row in result["rows"].items():
        values = [row["miou"][s] for s in EIGHT]
        known = [v for v in values if v is not None]
        average = f"{sum(known) / len(known):.1f}" if len(known) == len(EIGHT) else "-"
        reported = REPORTED.get(name)
        theirs = f"{sum(reported) / len(reported):.1f}" if reported else "-"
        cells = " | ".join("-" if v is None else f"{v:.1f}" for v in values)
        lines.append(f"| {name} | {cells} | {average} | {theirs} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="the eight-benchmark table (needs CUDA, weights, data)")
    parser.add_argument("--threads", type=int, default=2, help="CPU mode: torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="openclip:ViT-B-16:openai", help="GPU mode: the open_clip model")
    parser.add_argument("--checkpoint", default=None, help="GPU mode: also evaluate this checkpoint")
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="GPU mode: the benchmarks' folder")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--limit", type=int, default=None, help="GPU mode: only the first N images of each set")
    parser.add_argument("--device", default="cuda", help="GPU mode: the device (cpu runs the same table slowly)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.gpu and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (or --device cpu, slowly)")
    result = run_gpu(args) if args.gpu else run_cpu(args)
    stem = "training_free_gpu" if args.gpu else "training_free_cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (write_gpu_markdown if args.gpu else write_cpu_markdown)(result, args.out / f"{stem}.md")
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")


if __name__ == "__main__":
    main()
