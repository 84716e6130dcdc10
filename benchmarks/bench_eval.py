"""`mixreorg eval` throughput: images/s on CPU (tiny preset, synthetic set) and a GPU mode (ADE20K-sized images).

    .venv/bin/python benchmarks/bench_eval.py              # CPU: writes benchmarks/results/eval_cpu.{json,md}
    .venv/bin/python benchmarks/bench_eval.py --gpu        # GPU: writes benchmarks/results/eval_gpu.{json,md}

CPU mode: a random-weight ``tiny`` model (our folder format) evaluated on a freshly generated synthetic
evaluation set (``mixreorg data synth``, 96 px images) under the ``groupvit`` protocol (short side 2 x 64, window
64, stride 32), ``--threads`` intra-op threads, the run's DataLoader workers decoding.

GPU mode (target: under 60 s on one H100): a random-weight ``mixreorg_vits16`` model on ``--images`` (2000)
images written in the ADE20K layout at ADE20K validation sizes (70% 683x512 landscape, 15% 512x683 portrait,
15% 512x512; flat-coloured regions saved as JPEG, random 0-150 label PNGs), evaluated as ``ade20k`` with the
``groupvit`` protocol (short side 448, 448 window, stride 224, 150 classes). The clock covers what
``mixreorg eval`` does after start-up: loading the checkpoint, embedding the class names, decoding,
sliding-window inference and the confusion matrix. Writing the images is not timed.

Both modes call the same core function as the CLI (mixreorg.evaluation.run.run_evaluation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
ADE_SIZES = [((512, 683), 0.70), ((683, 512), 0.15), ((512, 512), 0.15)]  # (height, width), share


def save_random_model(preset: str, folder: Path) -> Path:
    from mixreorg.checkpoint import save_pretrained
    from mixreorg.config import load_config
    from mixreorg.model import build_model

    torch.manual_seed(0)
    config = load_config(preset)
    return save_pretrained(build_model(config), config, folder)


def _write_ade_pair(args: tuple[Path, int, int, int]) -> None:
    from PIL import Image

    folder, index, height, width = args
    rng = np.random.default_rng(index)
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = np.kron(blocks, np.ones((height // 8 + 1, width // 8 + 1, 1), dtype=np.uint8))[:height, :width]
    label = np.kron(rng.integers(0, 151, (8, 8)), np.ones((height // 8 + 1, width // 8 + 1)))[:height, :width]
    name = f"ADE_val_{index + 1:08d}"
    Image.fromarray(image).save(folder / "images" / "validation" / f"{name}.jpg", quality=90)
    Image.fromarray(label.astype(np.uint8)).save(folder / "annotations" / "validation" / f"{name}.png")


def write_ade_like(root: Path, count: int, workers: int) -> Path:
    folder = root / "ade" / "ADEChallengeData2016"
    for sub in ("images", "annotations"):
        (folder / sub / "validation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    shapes = rng.choice(len(ADE_SIZES), size=count, p=[share for _, share in ADE_SIZES])
    jobs = [(folder, i, *ADE_SIZES[s][0]) for i, s in enumerate(shapes)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_ade_pair, jobs, chunksize=32))
    return root


def timed_eval(request) -> tuple[dict, float]:
    from mixreorg.evaluation.run import run_evaluation

    start = time.perf_counter()
    report = run_evaluation(request)
    return report, time.perf_counter() - start


def cpu_mode(args: argparse.Namespace, tmp: Path) -> dict:
    from mixreorg.data.synthetic import generate_corpus
    from mixreorg.evaluation.run import EvalRequest

    generate_corpus(tmp / "synthetic", train_size=1, eval_size=args.images, image_size=96, seed=0)
    checkpoint = save_random_model("tiny", tmp / "tiny")
    request = EvalRequest(dataset="synthetic", checkpoint=str(checkpoint), data_root=str(tmp / "synthetic"),
                          device="cpu", batch_size=args.batch_size, workers=args.workers, progress=False)
    runs = []
    for threads in args.threads:  # on a shared machine one thread can beat two (threads wait on each other)
        torch.set_num_threads(threads)
        timed_eval(EvalRequest(**{**request.__dict__, "limit": 8}))  # warm-up: first-call allocations
        report, wall = timed_eval(request)
        runs.append({"threads": threads, "wall_seconds": round(wall, 2), "report": report})
    return {"mode": "cpu", "preset": "tiny", "dataset": "synthetic (96 px)", "workers": args.workers,
            "batch_size": args.batch_size, "runs": runs}


def gpu_mode(args: argparse.Namespace, tmp: Path) -> dict:
    from mixreorg.evaluation.run import EvalRequest

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA GPU; none is visible on this machine")
    start = time.perf_counter()
    write_ade_like(tmp / "data", args.images, workers=os.cpu_count() or 4)
    written = time.perf_counter() - start
    checkpoint = save_random_model(args.preset, tmp / args.preset)
    workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 4)
    request = EvalRequest(dataset="ade20k", checkpoint=str(checkpoint), data_root=str(tmp / "data"),
                          device=args.device, batch_size=args.batch_size, workers=workers, progress=True)
    timed_eval(EvalRequest(**{**request.__dict__, "limit": 32, "progress": False}))  # CUDA context, kernels
    report, wall = timed_eval(request)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none (smoke run on the CPU)"
    return {"mode": "gpu", "preset": args.preset, "dataset": f"{args.images} ADE20K-sized images",
            "batch_size": args.batch_size, "workers": workers, "target_seconds": 60,
            "seconds_writing_images_untimed": round(written, 1), "gpu": gpu,
            "runs": [{"threads": torch.get_num_threads(), "wall_seconds": round(wall, 2), "report": report}]}


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        f"# mixreorg eval throughput, {result['mode'].upper()} ({result['created']})",
        "",
        f"{result['preset']} (random weights) on {result['dataset']}, protocol groupvit, batch {result['batch_size']}, "
        f"{result['workers']} loader workers; machine: {result['machine']}.",
        "",
        "| threads | images | evaluation loop s | images/s (loop) | wall s (load + embed + loop) | images/s (wall) |",
        "|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        metrics = run["report"]["results"][0]
        lines.append(
            f"| {run['threads']} | {metrics['num_images']} | {metrics['seconds']} | {metrics['images_per_second']} "
            f"| {run['wall_seconds']} | {metrics['num_images'] / run['wall_seconds']:.2f} |"
        )
    if "target_seconds" in result:
        wall = result["runs"][0]["wall_seconds"]
        verdict = "met" if wall < result["target_seconds"] else "missed"
        if not result["gpu"].startswith("none"):
            lines += ["", f"Target: under {result['target_seconds']} s wall on an H100 ({verdict} on {result['gpu']})."]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="GPU mode: mixreorg_vits16 on ADE20K-sized images")
    parser.add_argument("--images", type=int, default=None, help="images to evaluate (CPU 64, GPU 2000)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (CPU 8, GPU 16)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (CPU 1, GPU min(16, cores))")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch intra-op threads (CPU mode)")
    parser.add_argument("--preset", default="mixreorg_vits16", help="GPU mode: model preset (random weights)")
    parser.add_argument("--device", default="cuda", help="GPU mode: device (cpu only to smoke-test this script)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for eval_{cpu,gpu}.json and .md")
    args = parser.parse_args()
    args.images = args.images or (2000 if args.gpu else 64)
    args.batch_size = args.batch_size or (16 if args.gpu else 8)
    if args.workers is None and not args.gpu:
        args.workers = 1
    with tempfile.TemporaryDirectory(prefix="mixreorg-bench-eval-") as tmp:
        result = (gpu_mode if args.gpu else cpu_mode)(args, Path(tmp))
    result["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    result["machine"] = (f"{cpu}, {os.cpu_count()} cores (shared), load average after "
                         f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}, torch {torch.__version__}")
    name = f"eval_{result['mode']}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.out / f"{name}.md")
    for run in result["runs"]:
        loop = run["report"]["results"][0]
        print(f"{run['threads']} threads, {loop['num_images']} images: {loop['images_per_second']} images/s in the "
              f"loop, {run['wall_seconds']} s wall")
    print(f"wrote {args.out / name}.json and .md")


if __name__ == "__main__":
    main()
