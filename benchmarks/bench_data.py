"""Data throughput on CPU: `data synth` images/s, and the training loader against a bare decode-and-resize loop.

The loader reads synthetic shards drawn at 256 px and makes uint8 batches of 224 crops plus caption + 3 noun
prompts tokenized (context 77), with each augmentation, in one DataLoader worker (its rate is "per worker") and in
the main process; the consumer's float normalisation of each batch is timed on its own and reported both without
(a GPU does it) and with it (what a CPU-only training pays). The bare loop reads the same shards in the same
run and only decodes each JPEG, resizes it to 224 and makes a float tensor. This machine is shared, so wall-clock
rates swing with other jobs; the comparison that holds up is CPU time: images per CPU-second of the process doing
the work (the worker's CPU time comes from the children's rusage once it has exited).
Writes benchmarks/results/data_cpu.json and data_cpu.md.

    .venv/bin/python benchmarks/bench_data.py [--samples 1536] [--batch-size 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import resource
import statistics
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import functional as F

from mixreorg.data.loader import build_train_loader
from mixreorg.data.synthetic import generate_corpus
from mixreorg.data.transforms import normalize_pixels

RESULTS = Path(__file__).resolve().parent / "results"


def synth_rate(out: Path, samples: int, image_size: int) -> dict:
    cpu = time.process_time()
    summary = generate_corpus(out, train_size=samples, eval_size=0, image_size=image_size, seed=0, shard_size=128)
    return {"wall": summary["images_per_second"], "cpu": samples / (time.process_time() - cpu)}


def bare_rate(blobs: list[bytes], image_size: int) -> dict:
    """Decode, resize, to float tensor: the least any loader has to do."""
    wall, cpu = time.perf_counter(), time.process_time()
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as image:
            resized = image.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        F.pil_to_tensor(resized).float().div_(255)
    return {"wall": len(blobs) / (time.perf_counter() - wall), "cpu": len(blobs) / (time.process_time() - cpu)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loader_rate(manifest: Path, augmentation: str, batch_size: int, image_size: int, workers: int) -> dict:
    """The loader's uint8 batches, and the ImageNet normalisation the consumer then does on them (the trainer
    does it on its device: free on a GPU, but CPU time a CPU-only training pays, timed here in this process)."""
    children, cpu = _children_cpu(), time.process_time()
    loader = build_train_loader(
        str(manifest), batch_size=batch_size, workers=workers, image_size=image_size, context_length=77,
        multi_label=3, augmentation=augmentation, crop_scale_min=0.08, shuffle_buffer=1000, seed=0,
    )
    normalize_cpu, normalized = 0.0, None

    def normalize(images: torch.Tensor) -> None:  # as the trainer does it: into one reused float batch
        nonlocal normalize_cpu, normalized
        start = time.process_time()
        if normalized is None:
            normalized = torch.empty(images.shape, dtype=torch.float32)
        normalize_pixels(images, out=normalized)
        normalize_cpu += time.process_time() - start

    batches = iter(loader)
    first = next(batches)[0]  # worker start-up and the first batch are not wall throughput
    normalize(first)
    wall, images = time.perf_counter(), 0
    for image_batch, *_ in batches:
        normalize(image_batch)
        images += image_batch.shape[0]
    wall = time.perf_counter() - wall
    del batches
    gc.collect()  # the iterator's shutdown joins the worker, so its CPU time is in the children's rusage
    worker_cpu = _children_cpu() - children if workers else time.process_time() - cpu - normalize_cpu
    total = images + first.shape[0]
    with_normalize = total / (worker_cpu + normalize_cpu)
    return {"wall": images / wall, "cpu": total / worker_cpu, "cpu_with_normalize": with_normalize}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1536, help="synthetic training images at 256 px")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds; medians are reported")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synth96 = synth_rate(tmp / "synth96", 2000, 96)
        synth256 = synth_rate(tmp / "synth256", args.samples, 256)
        shards = tmp / "synth256" / "train"
        blobs = []
        for shard in sorted(shards.glob("*.tar")):
            with tarfile.open(shard) as tar:
                blobs += [tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")]
        # Untimed: loads the tokenizer and fills the noun-prompt token cache in this process, which forked
        # workers then inherit, as in the steady state of a long epoch (both runs draw the same prompts).
        loader_rate(shards / "manifest.json", "light", args.batch_size, 224, 0)
        for _ in range(args.repeats):  # alternate, so every measurement sees the same mix of other jobs
            runs.setdefault("bare", []).append(bare_rate(blobs, 224))
            for aug in ("light", "groupvit"):
                for workers in (1, 0):
                    name = f"loader, {aug}, {'1 worker' if workers else 'in process'}"
                    runs.setdefault(name, []).append(
                        loader_rate(shards / "manifest.json", aug, args.batch_size, 224, workers)
                    )
    results = {name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
               for name, rounds in runs.items()}
    bare = results["bare"]
    for result in results.values():
        for key in ("cpu", "cpu_with_normalize", "wall"):
            if key in result:
                result[f"{key}_ratio_to_bare"] = result[key] / bare["cpu" if key.startswith("cpu") else "wall"]
    report = {
        "machine": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_end": list(os.getloadavg()),
        "note": "2 cores shared with other jobs; medians of alternating rounds; images/s per CPU-second of the "
                "working process (robust to contention) and per wall second (not)",
        "samples": len(blobs),
        "synth_images_per_second": {"96px": synth96, "256px": synth256},
        "results": results,
        "raw_rounds": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "data_cpu.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        f"# Data throughput on CPU ({report['machine']}, {report['date']})",
        "",
        f"{len(blobs)} synthetic 256 px JPEGs -> 224 crops, batch {args.batch_size}, caption + 3 noun prompts "
        "tokenized (context 77). The machine has 2 cores shared with other jobs (load average "
        f"{report['load_average_at_end'][0]:.1f} at the end), so wall-clock rates are noisy; CPU-time rates "
        "(images per CPU-second of the process doing the work) are the fair comparison. Medians of "
        f"{args.repeats} alternating rounds.",
        "",
        "The loader yields uint8 image batches; the trainer normalises them (float, ImageNet mean/std) on its "
        "device. *worker* counts the CPU time of the process that builds the batches (the DataLoader worker, or "
        "the main process with 0 workers); *+ normalise* adds the consumer's normalisation, done here on the CPU, "
        "as a CPU-only training pays it (on a GPU it is a few microseconds per batch). Wall rates include it.",
        "",
        "| what | images / CPU-s | vs bare (CPU) | images / wall-s | vs bare (wall) |",
        "|---|---|---|---|---|",
        f"| `data synth`, 96 px (default) | {synth96['cpu']:.0f} | | {synth96['wall']:.0f} | |",
        f"| `data synth`, 256 px | {synth256['cpu']:.0f} | | {synth256['wall']:.0f} | |",
        f"| bare decode + resize 224 + float tensor | {bare['cpu']:.0f} | 1.00 | {bare['wall']:.0f} | 1.00 |",
    ]
    for name, r in results.items():
        if name == "bare":
            continue
        lines.append(f"| {name}: worker (uint8 batches) | {r['cpu']:.0f} | {r['cpu_ratio_to_bare']:.2f} | | |")
        lines.append(f"| {name}: worker + normalise | {r['cpu_with_normalize']:.0f} | "
                     f"{r['cpu_with_normalize_ratio_to_bare']:.2f} | {r['wall']:.0f} | {r['wall_ratio_to_bare']:.2f} |")
    (RESULTS / "data_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
