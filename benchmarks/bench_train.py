"""Training speed: the tiny preset on CPU, 1 vs 2 processes; mixreorg_vits16 in bf16 on one GPU.

CPU mode (default) runs `mixreorg train` end to end (data loading in the training process, DDP over gloo for
2 processes) on a synthetic corpus and times steps from the run's metrics.jsonl: the median step time after
``--skip`` warm-up steps, images/s of the global batch, and the weak-scaling efficiency of 2 processes (each
with the per-process batch) against one. On a shared machine wall-clock times swing with other jobs, so the
configurations alternate round by round and medians over ``--repeats`` rounds are reported.
Writes benchmarks/results/train_cpu.{json,md}.

    .venv/bin/python benchmarks/bench_train.py [--batch-size 16] [--steps 12] [--repeats 2]

GPU mode times the training step itself (one GPU, synthetic tensors already on the device, so no data
loading): images/s and peak memory at each ``--batches`` size, model FLOPs per step counted by
torch.utils.flop_counter.FlopCounterMode (forward + backward), MFU against ``--peak-tflops`` (989 = H100 SXM
dense bf16), the largest batch that fits, and the paper run (CC12M, 30 epochs) projected onto 8 and 64 GPUs.
Writes benchmarks/results/train_gpu.{json,md}.

    .venv/bin/python benchmarks/bench_train.py --device cuda [--batches 128 256] [--compile] [--grad-checkpointing]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
CC12M_PAIRS = 11_156_203  # GroupViT's CC12M count (spec 8.4)
PAPER_EPOCHS = 30


def _stamp() -> dict:
    return {
        "machine": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _write(name: str, record: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)


# ---------------------------------------------------------------------------------------------- CPU mode


def run_cpu_config(manifest: str, out: Path, processes: int, threads: int, batch: int, steps: int, skip: int) -> dict:
    """One `mixreorg train` run; step times from the wall-clock stamps rank 0 logs after every step."""
    command = [sys.executable, "-m", "mixreorg.cli.main", "train", "--config", "tiny", "--data", manifest,
               "--out", str(out), "--gpus", str(processes), f"train.batch_size={batch}", f"train.max_steps={steps}",
               "train.save_every=1000000", "train.log_every=1", "data.workers=0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training run failed:\n{done.stderr[-3000:]}")
    stamps = [json.loads(line)["time"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    step_times = [b - a for a, b in zip(stamps[skip:], stamps[skip + 1 :], strict=False)]
    step = statistics.median(step_times)
    return {"step_s": step, "images_per_s": processes * batch / step, "step_times": step_times}


def cpu_mode(args: argparse.Namespace) -> None:
    from mixreorg.data.synthetic import generate_corpus

    configs = [
        ("1 process x 1 thread", 1, 1),
        ("1 process x 2 threads", 1, 2),
        ("2 processes x 1 thread (DDP, gloo)", 2, 1),
    ]
    rounds: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        samples = 2 * args.batch_size * (args.steps + 1)
        generate_corpus(Path(tmp) / "synth", train_size=samples, eval_size=0, image_size=64, shard_size=32)
        manifest = str(Path(tmp) / "synth" / "train" / "manifest.json")
        for repeat in range(args.repeats):
            for name, processes, threads in configs:
                out = Path(tmp) / f"run-{repeat}-{processes}-{threads}"
                rounds[name].append(
                    run_cpu_config(manifest, out, processes, threads, args.batch_size, args.steps, args.skip)
                )
                print(f"round {repeat + 1}: {name}: {rounds[name][-1]}", flush=True)
    results = {}
    for name, processes, threads in configs:
        # Pooled over rounds: a burst of load from other jobs spoils some steps, not a whole round's median.
        step = statistics.median(t for r in rounds[name] for t in r["step_times"])
        results[name] = {
            "processes": processes,
            "threads_per_process": threads,
            "batch_per_process": args.batch_size,
            "step_s": step,
            "images_per_s": processes * args.batch_size / step,
            "best_round_images_per_s": max(r["images_per_s"] for r in rounds[name]),
        }
    single, threaded, ddp = (results[name]["images_per_s"] for name, _, _ in configs)
    scaling = {
        "weak_scaling_efficiency_2proc_vs_1proc_1thread": ddp / (2 * single),
        "ddp_2proc_vs_1proc_2threads": ddp / threaded,
    }
    load = os.getloadavg()[0]
    record = {**_stamp(), "load_average_at_end": load, "preset": "tiny", "steps": args.steps,
              "skipped_warmup_steps": args.skip, "repeats": args.repeats, "results": results, "scaling": scaling,
              "raw_rounds": rounds}  # fmt: skip
    lines = [
        f"# Training speed on CPU, tiny preset ({record['machine']}, {record['date']})",
        "",
        f"`mixreorg train --config tiny` on {samples} synthetic 64 px images, batch {args.batch_size} per process, "
        f"data loading in the training process (data.workers=0), fp32. Median of the step times of steps "
        f"{args.skip + 1}..{args.steps}, pooled over {args.repeats} alternating rounds (best round alongside). "
        f"{record['cpus']} cores shared with other jobs (load average {load:.1f} at the end): wall-clock numbers are "
        "noisy, compare them within this table only.",
        "",
        "| configuration | global batch | step (s) | images/s | images/s, best round |",
        "|---|---|---|---|---|",
    ]
    for name, processes, _ in configs:
        r = results[name]
        lines.append(f"| {name} | {processes * args.batch_size} | {r['step_s']:.3f} | {r['images_per_s']:.1f} | "
                     f"{r['best_round_images_per_s']:.1f} |")
    lines += [
        "",
        f"- Weak-scaling efficiency, 2 processes vs 1 process x 1 thread: "
        f"**{scaling['weak_scaling_efficiency_2proc_vs_1proc_1thread']:.2f}** (1.00 = twice the images/s).",
        f"- 2 DDP processes vs 1 process using both cores through threads: "
        f"{scaling['ddp_2proc_vs_1proc_2threads']:.2f}x the images/s.",
        "",
    ]
    _write("train_cpu", record, "\n".join(lines))


# ---------------------------------------------------------------------------------------------- GPU mode


def _batch(batch: int, cfg, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    size, length = cfg.model.vision.image_size, cfg.model.text.context_length
    images = torch.randn(batch, 3, size, size, device=device)
    texts = torch.randint(1, 49000, (batch, 1 + cfg.loss.multi_label, length), device=device)
    texts[..., length // 2] = 49407  # the end-of-text token, where the text tower pools
    return images, texts


def step_flops(trainer, images: torch.Tensor, texts: torch.Tensor) -> int:
    """Forward + backward FLOPs of one training step on the plain (uncompiled) model."""
    from torch.utils.flop_counter import FlopCounterMode

    from mixreorg.losses import compute_losses
    from mixreorg.training.precision import autocast

    model = trainer.model
    with FlopCounterMode(display=False) as counter:
        with autocast(trainer.precision, trainer.device):
            plan = trainer.method.mixing_plan(trainer, images, 0)
            outputs = model(images, texts, plan=plan) if plan is not None else model(images, texts)
            loss = compute_losses(outputs, trainer.cfg.loss, trainer.cfg.model.mixing.group_size)["loss"]
        loss.float().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def time_steps(trainer, images: torch.Tensor, texts: torch.Tensor, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        trainer.train_step([(images, texts)])
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step([(images, texts)])
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def _trainer(args: argparse.Namespace, batch: int):
    from mixreorg.config import load_config
    from mixreorg.training.distributed import DistEnv
    from mixreorg.training.trainer import Trainer

    overrides = [f"train.batch_size={batch}", "train.precision=bf16",
                 f"train.grad_checkpointing={str(args.grad_checkpointing).lower()}",
                 f"train.torch_compile={str(args.compile).lower()}"]  # fmt: skip
    cfg = load_config(args.preset, overrides)
    return Trainer(cfg, DistEnv(), torch.device("cuda"), warmup_steps=1000, total_steps=100000), cfg


def largest_batch(args: argparse.Namespace, start: int, group: int) -> int:
    """Grow the per-GPU batch by ``group`` (the mixing group) until a training step runs out of memory."""
    trainer, cfg = _trainer(args, start)
    fits, batch = 0, start
    while batch <= args.max_batch:
        try:
            images, texts = _batch(batch, cfg, trainer.device)
            trainer.train_step([(images, texts)])
            torch.cuda.synchronize()
            fits = batch
            del images, texts
            batch += max(group, batch // 8 // group * group)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return fits


def gpu_mode(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a GPU; none is visible here")
    torch.backends.cuda.matmul.allow_tf32 = True
    results = []
    for batch in args.batches:
        trainer, cfg = _trainer(args, batch)
        images, texts = _batch(batch, cfg, trainer.device)
        flops = step_flops(trainer, images, texts)
        torch.cuda.reset_peak_memory_stats()
        seconds = time_steps(trainer, images, texts, args.warmup, args.steps)
        peak = torch.cuda.max_memory_allocated() / 2**30
        results.append({
            "batch": batch,
            "step_s": seconds,
            "images_per_s": batch / seconds,
            "peak_memory_gib": peak,
            "tflops_per_step": flops / 1e12,
            "mfu": flops / seconds / (args.peak_tflops * 1e12),
        })
        print(results[-1], flush=True)
        del trainer, images, texts
        torch.cuda.empty_cache()
    group = cfg.model.mixing.group_size if cfg.model.mixing.enabled else 8
    biggest = largest_batch(args, max(args.batches), group) if args.find_max else None
    best = max(results, key=lambda r: r["images_per_s"])
    samples = PAPER_EPOCHS * CC12M_PAIRS
    projection = {}
    for gpus in (8, 64):
        hours = samples / (best["images_per_s"] * gpus * args.scaling) / 3600
        projection[str(gpus)] = {"hours": hours, "gpu_hours": hours * gpus, "usd": hours * gpus * args.usd_per_gpu_hour}
    paper_run = {"samples": samples, "assumed_scaling": args.scaling, "usd_per_gpu_hour": args.usd_per_gpu_hour,
                 "gpus": projection}  # fmt: skip
    record = {**_stamp(), "gpu": torch.cuda.get_device_name(0), "preset": args.preset, "precision": "bf16",
              "compile": args.compile, "grad_checkpointing": args.grad_checkpointing, "peak_tflops": args.peak_tflops,
              "results": results, "largest_batch": biggest, "paper_run": paper_run}  # fmt: skip
    lines = [
        f"# Training speed on {record['gpu']}, {args.preset}, bf16 ({record['date']})",
        "",
        f"One GPU, synthetic tensors on the device (no data loading), compile={args.compile}, "
        f"grad checkpointing={args.grad_checkpointing}; mean of {args.steps} steps after {args.warmup} warm-up "
        f"steps. FLOPs: FlopCounterMode, forward + backward of one step; MFU against {args.peak_tflops:g} TFLOP/s.",
        "",
        "| batch / GPU | step (s) | images/s | peak memory (GiB) | TFLOP / step | MFU |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['batch']} | {r['step_s']:.3f} | {r['images_per_s']:.0f} | {r['peak_memory_gib']:.1f} | "
              f"{r['tflops_per_step']:.1f} | {r['mfu']:.1%} |" for r in results]  # fmt: skip
    if biggest is not None:
        lines += ["", f"Largest per-GPU batch that trains: **{biggest}** (searched up to {args.max_batch})."]
    lines += ["", f"Paper run ({PAPER_EPOCHS} epochs of CC12M = {samples / 1e6:.0f} M samples) at "
              f"{best['images_per_s']:.0f} images/s per GPU, assuming {args.scaling:.0%} multi-GPU scaling and "
              f"${args.usd_per_gpu_hour:g} per GPU-hour:", ""]  # fmt: skip
    for gpus, p in projection.items():
        lines.append(f"- {gpus} GPUs: {p['hours']:.1f} h, {p['gpu_hours']:.0f} GPU-h, ${p['usd']:,.0f}")
    _write("train_gpu", record, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="CPU: per-process batch (tiny preset)")
    parser.add_argument("--steps", type=int, default=12, help="steps per run (CPU) or timed steps (GPU)")
    parser.add_argument("--skip", type=int, default=3, help="CPU: warm-up steps left out of the timing")
    parser.add_argument("--repeats", type=int, default=3, help="CPU: alternating rounds")
    parser.add_argument("--preset", default="mixreorg_vits16", help="GPU: model preset")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256], help="GPU: per-GPU batch sizes")
    parser.add_argument("--warmup", type=int, default=5, help="GPU: untimed steps first")
    parser.add_argument("--compile", action="store_true", help="GPU: torch.compile the model")
    parser.add_argument("--grad-checkpointing", action="store_true", help="GPU: recompute activations")
    parser.add_argument("--find-max", action=argparse.BooleanOptionalAction, default=True, help="GPU: search")
    parser.add_argument("--max-batch", type=int, default=2048, help="GPU: upper end of the batch search")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU: dense bf16 peak (H100 SXM 989)")
    parser.add_argument("--scaling", type=float, default=0.9, help="GPU: assumed multi-GPU scaling efficiency")
    parser.add_argument("--usd-per-gpu-hour", type=float, default=3.0, help="GPU: price for the cost projection")
    args = parser.parse_args()
    (gpu_mode if args.device == "cuda" else cpu_mode)(args)


if __name__ == "__main__":
    main()
