"""Image-encoder forward speed and peak memory: ours vs transformers' GroupViTVisionModel, identical weights.

    python benchmarks/bench_encoder.py            # writes benchmarks/results/encoder_cpu.{json,md}

Both encoders are the groupvit_vits16 image tower with the same random weights (ours converted with
mixreorg.checkpoint's transformers mapping; outputs are checked to agree). Timing runs in this process
with ``--threads`` intra-op threads under ``torch.inference_mode``: warm-up, then the two models
alternate run by run (so load from other processes hits both alike), and the median and minimum of
``--repeats`` runs are reported. Peak memory is measured in a fresh subprocess per model and input
(Linux VmHWM from /proc/self/status, reset through /proc/self/clear_refs after a warm-up forward):
the resident-memory high-water mark of the forward pass above the resident memory before it.

transformers' vision forward does not pass ``interpolate_pos_encoding`` to its embeddings, so a
224-configured model refuses 448 px input; at 448 it is built with image_size=448 and position
embeddings resized once by the same bicubic resize ours applies on the fly.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mixreorg.utils.environment import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"
PRESET = "groupvit_vits16"


def build_ours() -> torch.nn.Module:
    from mixreorg.model import build_model

    torch.manual_seed(0)
    return build_model(PRESET).eval()


def build_hf(ours_model: torch.nn.Module, image_size: int) -> torch.nn.Module:
    """transformers' GroupViTVisionModel holding ``ours_model``'s image-encoder weights."""
    from transformers import GroupViTVisionConfig, GroupViTVisionModel

    from mixreorg.checkpoint.hf import ours_config_to_hf
    from mixreorg.checkpoint.hf_names import ours_to_hf
    from mixreorg.model.patch_embed import resize_pos_embed

    vision = ours_config_to_hf(ours_model.cfg)["vision_config"]
    vision["image_size"] = image_size
    model = GroupViTVisionModel(GroupViTVisionConfig(**vision)).eval()
    state = {k: v for k, v in ours_to_hf(ours_model.state_dict()).items() if k.startswith("vision_model.")}
    grid = image_size // ours_model.cfg.vision.patch_size
    key = "vision_model.embeddings.position_embeddings"
    state[key] = resize_pos_embed(state[key], (grid, grid)).contiguous()
    model.load_state_dict(state, strict=True)
    return model


def forward_fns(ours_model: torch.nn.Module, hf_model: torch.nn.Module, images: torch.Tensor) -> dict:
    return {
        "ours": lambda: ours_model.image_encoder(images).pooled,
        "hf": lambda: hf_model(pixel_values=images).pooler_output,
    }


def time_pair(fns: dict, warmup: int, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and process CPU seconds per run; the models alternate, in swapped order every other run.

    CPU time barely moves when other jobs take the cores (a descheduled process accrues none), so on a
    shared machine it is the steadier measure of the work a forward costs; wall time is what a user waits.
    """
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in fns}
    names = list(fns)
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for run in range(repeats):
            for name in names if run % 2 == 0 else names[::-1]:
                wall, cpu = time.perf_counter(), time.process_time()
                fns[name]()
                times[name]["cpu"].append(time.process_time() - cpu)
                times[name]["wall"].append(time.perf_counter() - wall)
    return times


def profile_ops(fn, runs: int = 3, top: int = 8) -> list[dict]:
    """Top ops by self CPU time (ms per forward) under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                fn()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [
        {"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000 / runs, 2), "calls": e.count // runs}
        for e in rows
    ]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_worker(which: str, weights: Path, size: int, batch: int, threads: int) -> dict:
    """Runs in a fresh process: peak resident memory of one forward above the memory before it."""
    from mixreorg.checkpoint import load_model

    torch.set_num_threads(threads)
    full = load_model(weights)[0]
    if which == "hf":
        model = build_hf(full, size)
        run = lambda images: model(pixel_values=images).pooler_output  # noqa: E731
    else:
        model = full.image_encoder
        run = lambda images: model(images).pooled  # noqa: E731
    del full  # only the image tower stays resident, in both cases
    images = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        run(images)  # first call allocates lazily initialised buffers (oneDNN, thread pools)
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so RSS is live memory
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        for _ in range(2):
            run(images)
        peak = _status_kib("VmHWM")
    return {"rss_before_mib": round(before / 1024, 1), "peak_mib": round(peak / 1024, 1),
            "forward_peak_mib": round((peak - before) / 1024, 1)}  # fmt: skip


def measure_memory(which: str, weights: Path, size: int, batch: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--memory-worker", which, "--weights", str(weights),
               "--sizes", str(size), "--batches", str(batch), "--threads", str(threads)]  # fmt: skip
    # A fixed mmap threshold makes glibc return large freed blocks at once instead of keeping them in the
    # heap, so the high-water mark follows the memory the forward actually holds.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def hf_native_448_error(ours_model: torch.nn.Module) -> str:
    hf_224 = build_hf(ours_model, ours_model.cfg.vision.image_size)
    try:
        with torch.inference_mode():
            hf_224(pixel_values=torch.randn(1, 3, 448, 448))
    except Exception as exc:  # whatever transformers raises is the finding
        return f"{exc.__class__.__name__}: {exc}"
    return "none: runs at 448"


def run_benchmark(args: argparse.Namespace) -> dict:
    import transformers

    full = build_ours()
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        from mixreorg.checkpoint import save_pretrained

        weights = save_pretrained(full, None, Path(tmp) / "groupvit")
        for size, batch, threads in itertools.product(args.sizes, args.batches, args.threads):
            torch.set_num_threads(threads)
            hf_model = build_hf(full, size)
            torch.manual_seed(size + batch)
            images = torch.randn(batch, 3, size, size)
            fns = forward_fns(full, hf_model, images)
            with torch.inference_mode():
                diff = float((fns["ours"]() - fns["hf"]()).abs().max())
            times = time_pair(fns, args.warmup, args.repeats)
            row = {"image_size": size, "batch": batch, "threads": threads, "max_abs_diff": diff}
            for name, values in times.items():
                row[f"{name}_median_ms"] = round(1000 * statistics.median(values["wall"]), 1)
                row[f"{name}_min_ms"] = round(1000 * min(values["wall"]), 1)
                row[f"{name}_cpu_median_ms"] = round(1000 * statistics.median(values["cpu"]), 1)
            for stat in ("median", "min", "cpu_median"):
                row[f"ratio_{stat}"] = round(row[f"ours_{stat}_ms"] / row[f"hf_{stat}_ms"], 3)
            if threads == args.threads[0]:  # memory does not depend on the thread count enough to repeat it
                for name in ("ours", "hf"):
                    row[f"{name}_memory"] = measure_memory(name, weights, size, batch, threads)
                row["memory_ratio"] = round(
                    row["ours_memory"]["forward_peak_mib"] / max(row["hf_memory"]["forward_peak_mib"], 0.1), 3
                )
            if args.profile and batch == 1 and threads == 1:
                for name, fn in fns.items():
                    row.setdefault("profile", {})[name] = profile_ops(fn)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {
        "benchmark": "image encoder forward, groupvit_vits16, random weights shared by both",
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "memory_method": "VmHWM after /proc/self/clear_refs reset, one subprocess per model and input",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},  # fmt: skip
        "hf_448_without_resize": hf_native_448_error(full),
        "rows": rows,
    }


def _memory_cell(row: dict, name: str) -> str:
    return str(row[f"{name}_memory"]["forward_peak_mib"]) if f"{name}_memory" in row else "-"


def write_markdown(result: dict, path: Path) -> None:
    machine = result["machine"]
    load = ", ".join(f"{x:.1f}" for x in (*machine["load_average_before"], *machine["load_average_after"]))
    lines = [
        "# Image encoder on CPU: ours vs transformers GroupViTVisionModel",
        "",
        f"{result['benchmark']}; inference mode, {result['warmup']} warm-up runs, {result['repeats']} timed runs "
        f"per model, the two alternating. Machine: {machine['cpu']} ({machine['cores']} cores, shared with other "
        f"jobs; load average 1/5/15 min before and after: {load}). torch {machine['torch']}, "
        f"transformers {machine['transformers']}. Ratio = ours / transformers (below 1: ours is faster or smaller). "
        "Wall times are medians and minima of the runs; 'CPU ms' is the median process CPU time per forward, "
        "the steadier measure when other jobs share the cores (at 2 threads it also counts OpenMP spin-waiting).",
        "",
        f"Memory: {result['memory_method']}; 'forward peak' is the high-water mark above the resident memory "
        "before the forward (measured once per input, at the first thread count).",
        "",
        "| size | batch | threads | ours median ms | HF median ms | ratio (median) | ours min ms | HF min ms "
        "| ratio (min) | ours CPU ms | HF CPU ms | ratio (CPU) | ours fwd peak MiB | HF fwd peak MiB | memory ratio "
        "| max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['image_size']} | {r['batch']} | {r['threads']} | {r['ours_median_ms']} | {r['hf_median_ms']} "
            f"| {r['ratio_median']} | {r['ours_min_ms']} | {r['hf_min_ms']} | {r['ratio_min']} "
            f"| {r['ours_cpu_median_ms']} | {r['hf_cpu_median_ms']} | {r['ratio_cpu_median']} "
            f"| {_memory_cell(r, 'ours')} | {_memory_cell(r, 'hf')} | {r.get('memory_ratio', '-')} "
            f"| {r['max_abs_diff']:.1e} |"
        )
    lines += ["", f"transformers at 448 px on the 224 model: `{result['hf_448_without_resize'][:200]}`", ""]
    for r in result["rows"]:
        for name, ops in r.get("profile", {}).items():
            lines.append(f"Top ops, {name}, {r['image_size']} px, batch 1, 1 thread (ms per forward, torch.profiler):")
            lines.append("")
            lines += [f"- {op['op']}: {op['self_ms']} ms ({op['calls']} calls)" for op in ops]
            lines.append("")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448], help="input sizes (px)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch intra-op thread counts")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per model first")
    parser.add_argument("--repeats", type=int, default=11, help="timed runs per model")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the torch.profiler tables")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for encoder_cpu.json and .md")
    parser.add_argument("--memory-worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        worker = memory_worker(args.memory_worker, args.weights, args.sizes[0], args.batches[0], args.threads[0])
        print(json.dumps(worker))
        return
    result = run_benchmark(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoder_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, args.out / "encoder_cpu.md")
    print(f"wrote {args.out / 'encoder_cpu.json'} and {args.out / 'encoder_cpu.md'}")


if __name__ == "__main__":
    main()
