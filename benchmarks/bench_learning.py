"""Does text-supervised grouping emerge, and what do MixReorg's parts do to it? Same budget, several seeds.

Trains each variant (GroupViT, MixReorg, the paper's ablations, our readings of what the paper leaves open) for
the same number of steps on a synthetic world, through the real `mixreorg train` command, then scores each on
the world's held-out evaluation set: naming (mIoU under the `groupvit` protocol, object and background classes
apart) and grouping, names aside (learning_groups.py: segments per image, each true region's best-segment IoU).
Floors: the untrained model, colour clustering with oracle names, one segment per image, colour k-means. The
report (learning_report.py) gives mean +- sd over seeds and 95% Welch intervals of the differences.

    python benchmarks/bench_learning.py --seeds 5 --variants groupvit mixreorg --jobs 2     # the verdict
    python benchmarks/bench_learning.py --steps 300 --seeds 1 --variants groupvit           # a quick look
    python benchmarks/bench_learning.py --device cuda --scale vits16 --minutes 3            # paper width, GPU

Results: benchmarks/results/<name>.json and .md, <name>_curves.png and <name>_groups.png (default name
learning_<world>_<cpu|gpu>). Trained runs are kept under benchmarks/work/runs and reused, so re-running a command
re-evaluates without retraining.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from learning_groups import group_figure, grouping, grouping_floors, kmeans_colours, segments_of
from learning_report import write_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work"

# The two methods at each scale: (GroupViT preset, MixReorg preset).
SCALES = {"tiny": ("tiny_groupvit", "tiny"), "vits16": ("groupvit_vits16", "mixreorg_vits16")}
# name -> (method, overrides, the row it is compared with). The paper's Table 6 ablations remove one MixReorg part
# each; the readings change one choice the paper leaves open (README, Decisions); the rest are not in the paper.
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "groupvit": ("groupvit", [], ""),
    "mixreorg": ("mixreorg", [], "groupvit"),
    "mixreorg_no_contextual": ("mixreorg", ["model.vision.contextual_layers=0"], "mixreorg"),
    "mixreorg_no_progressive": ("mixreorg", ["model.mixing.progressive_layers=0"], "mixreorg"),
    "mixreorg_no_restoration": ("mixreorg", ["loss.restoration_weight=0"], "mixreorg"),
    "mixreorg_no_segmentation": ("mixreorg", ["loss.segmentation_weight=0"], "mixreorg"),
    "mixreorg_seg_attached": ("mixreorg", ["model.mixing.seg_attention_detach=false"], "mixreorg"),
    "mixreorg_progressive_average": ("mixreorg", ["model.mixing.progressive_mode=average"], "mixreorg"),
    "mixreorg_progressive_detach": ("mixreorg", ["model.mixing.progressive_detach=true"], "mixreorg"),
    "mixreorg_seg_hard": ("mixreorg", ["model.mixing.seg_attention=hard"], "mixreorg"),
    "mixreorg_seg_temperature": ("mixreorg", ["model.segmentation_temperature=own"], "mixreorg"),
    # GroupViT's Linear-BatchNorm-ReLU-Linear projector instead of the tiny presets' linear one; the running-norm
    # reading only exists with a BatchNorm.
    "groupvit_bn_projector": ("groupvit", ["model.projection.num_layers=2"], "groupvit"),
    "mixreorg_bn_projector": ("mixreorg", ["model.projection.num_layers=2"], "mixreorg"),
    "mixreorg_bn_projector_running_norm": (
        "mixreorg", ["model.projection.num_layers=2", "model.mixing.segment_norm=running"], "mixreorg_bn_projector"
    ),
    "groupvit_contextual": ("groupvit", ["model.vision.contextual_layers=1"], "groupvit"),
    "mixreorg_group_texts": ("mixreorg", ["loss.segmentation_texts=group"], "mixreorg"),
    "groupvit_same_word": ("groupvit", ["loss.multi_label_positives=same_word"], "groupvit"),
    "mixreorg_same_word": ("mixreorg", ["loss.multi_label_positives=same_word"], "mixreorg"),
}


def corpus(world: str, train_size: int, eval_size: int, image_size: int, work: Path = WORK) -> Path:
    from mixreorg.data.synthetic import generate_corpus

    folder = work / f"synth_{world}_{image_size}px_{train_size}_{eval_size}"
    if not (folder / "synth.json").is_file():
        generate_corpus(folder, train_size=train_size, eval_size=eval_size, image_size=image_size, seed=0,
                        world=world, workers=os.cpu_count() or 1)
    return folder


def evaluate(model, data: Path, device) -> dict:
    """Naming (mIoU; object and background classes apart) and grouping of one model on the held-out set."""
    from mixreorg.data.benchmarks import get_benchmark
    from mixreorg.evaluation.protocols import resolve_protocol
    from mixreorg.evaluation.segmentation import evaluate_segmentation

    benchmark = get_benchmark("synthetic", data)
    protocol = resolve_protocol(
        "groupvit", "synthetic", benchmark.has_background, model.cfg.vision.image_size, False, False, None
    )
    result = evaluate_segmentation(model.eval(), benchmark, protocol, device, batch_size=8, workers=0,
                                   progress=False)
    per_class = result.metrics["per_class_iou"]
    return {
        "mIoU": result.metrics["miou"],
        "objects": result.metrics["objects_miou"],
        "backgrounds": result.metrics["backgrounds_miou"],
        "per_class": per_class,
        "grouping": grouping(model, benchmark),
    }


def colour_clustering(data: Path, clusters: int = 4, seed: int = 0) -> dict:
    """mIoU of per-image k-means on RGB with each cluster named by its majority true class (an oracle)."""
    import torch

    from mixreorg.data.benchmarks import get_benchmark
    from mixreorg.evaluation.metrics import ConfusionMatrix

    benchmark = get_benchmark("synthetic", data)
    matrix = ConfusionMatrix(len(benchmark.classes), "cpu", benchmark.ignore_index)
    rng = np.random.default_rng(seed)
    for image, label, _ in benchmark:
        assign = kmeans_colours(image, clusters, rng).reshape(-1)
        flat = label.reshape(-1)
        prediction = np.zeros_like(flat)
        for k in range(clusters):
            members = flat[(assign == k) & (flat != benchmark.ignore_index)]
            if len(members):
                prediction[assign == k] = np.bincount(members).argmax()
        matrix.update(torch.from_numpy(prediction.reshape(label.shape)).long(), torch.from_numpy(label).long())
    return {"mIoU": matrix.scores(benchmark.classes).miou}


def run_folder(world: str, scale: str, variant: str, seed: int, steps: int, common: list[str],
               work: Path = WORK) -> Path:
    """Where a variant's run lives; the name carries everything that makes it differ from another run."""
    run = work / "runs" / f"{world}_{scale}_{variant}_seed{seed}_{steps}"
    if common:
        run = run.with_name(run.name + "_" + "_".join(s.replace("=", "-") for s in common))
    return run


def variant_preset(variant: str, scale: str) -> str:
    """The preset a variant trains from: its method's preset at that scale."""
    return SCALES[scale][("groupvit", "mixreorg").index(VARIANTS[variant][0])]


def variant_overrides(variant: str, seed: int, steps: int, common: list[str]) -> list[str]:
    return [*common, *VARIANTS[variant][1], f"train.max_steps={steps}", f"train.seed={seed}",
            f"train.save_every={steps}"]


def train_run(run: Path, preset: str, overrides: list[str], data: Path, threads: int,
              manifest: str = "train") -> dict:
    """Train through the real CLI on ``data/<manifest>`` (reused when its model exists); wall and CPU seconds."""
    timing = run / "bench_time.json"
    if (run / "model" / "model.safetensors").is_file() and timing.is_file():
        return json.loads(timing.read_text())
    import shutil

    shutil.rmtree(run, ignore_errors=True)
    run.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "mixreorg.cli.main", "train", "--config", preset,
               "--data", str(data / manifest / "manifest.json"), "--out", str(run), *overrides]
    start = time.perf_counter()
    log_path = run.parent / f"{run.name}.log"
    with open(log_path, "w") as log:
        # Not from the repository root, where `python -m` would find the source tree before the installed package.
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run.parent)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training failed: {' '.join(command)} (log {log_path})")
    record = {"seconds": time.perf_counter() - start, "cpu_seconds": usage.ru_utime + usage.ru_stime}
    timing.write_text(json.dumps(record))
    return record


def _curves(runs: dict[str, list[Path]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mixreorg.training.logging import read_metrics

    titles = ("image-text contrastive loss (original branch)", "segments per training image",
              "objects mIoU on the synthetic eval set")
    curves = {  # per variant, per run: the points of each panel
        variant: [(
            [(r["step"], r["contrastive_loss"]) for r in records if "contrastive_loss" in r],
            [(r["step"], r["segments_per_image"]) for r in records if "segments_per_image" in r],
            [(r["step"], r[k]) for r in records for k in r if k.endswith("/objects_miou")],
        ) for records in map(read_metrics, folders)]
        for variant, folders in runs.items()
    }
    # The evaluation panel only when runs evaluated during training (--eval-every).
    panels = 3 if any(series[2] for runs_ in curves.values() for series in runs_) else 2
    fig = Figure(figsize=(5 * panels, 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    for index, (variant, per_run) in enumerate(curves.items()):
        for number, series in enumerate(per_run):
            for axis, points in zip(axes, series[:panels], strict=True):
                if points:
                    axis.plot(*zip(*points, strict=True), color=f"C{index % 10}", alpha=0.6,
                              label=variant if number == 0 else None)
    for axis, title in zip(axes, titles[:panels], strict=True):
        axis.set(title=title, xlabel="step")
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="appearance", choices=("appearance", "shapes"))
    parser.add_argument("--scale", default="tiny", choices=list(SCALES))
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps per run")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="instead of --steps: as many steps as this many minutes of training allow (timed on a "
                        "short calibration run of each method)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seeds-of", nargs="*", default=[], metavar="VARIANT=N", help="more seeds for some rows")
    parser.add_argument("--variants", nargs="+", default=["groupvit", "mixreorg"], choices=list(VARIANTS))
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--eval-size", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=96, help="side of the drawn images")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once (each with --threads threads)")
    parser.add_argument("--threads", type=int, default=0, help="threads per training (default: cores / jobs)")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="steps between evaluations during training (mIoU curves; default none)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--name", default="", help="results file stem")
    # Absolute: the trainings run with their run folder's parent as working directory.
    parser.add_argument("--out", type=lambda p: Path(p).resolve(), default=RESULTS, help="folder for the results")
    parser.add_argument("--work", type=lambda p: Path(p).resolve(), default=WORK,
                        help="folder for the corpus and the runs (reused)")
    parser.add_argument("--note", default="", help="a sentence for the report, e.g. how runs shared the machine")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite <name>.md from <name>.json (after a change to the report) without evaluating")
    return parser.parse_args()


def calibrated_steps(preset: str, extra: list[str], data: Path, minutes: float, threads: int, work: Path) -> int:
    """Steps that fit in ``minutes`` of training, from the rate of a 30-step run (its first 10 steps excluded)."""
    import shutil

    from mixreorg.config.loader import load_config
    from mixreorg.training.logging import read_metrics

    run = work / "runs" / f"calibrate_{preset}"
    shutil.rmtree(run, ignore_errors=True)
    train_run(run, preset, [*extra, "train.max_steps=30", "train.save_every=1000", "train.log_every=1"],
              data, threads)
    rates = [r["images_per_s"] for r in read_metrics(run) if "images_per_s" in r and r["step"] > 10]
    batch = load_config(preset, extra).train.batch_size
    return max(10, int(minutes * 60 * sum(rates) / max(len(rates), 1) / batch))


def main() -> None:
    args = parse_args()
    if args.report_only:
        stem = args.name or f"learning_{args.world}_{'gpu' if args.device == 'cuda' else 'cpu'}"
        (args.out / f"{stem}.md").write_text(write_report(json.loads((args.out / f"{stem}.json").read_text())))
        return
    import torch

    from mixreorg.checkpoint import load_model
    from mixreorg.config.loader import load_config
    from mixreorg.data.benchmarks import get_benchmark
    from mixreorg.model import build_model
    from mixreorg.training.logging import read_metrics
    from mixreorg.utils.environment import device_name

    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    torch.set_num_threads(threads * args.jobs)
    data = corpus(args.world, args.train_size, args.eval_size, args.image_size, args.work)
    device = torch.device(args.device)
    presets = dict(zip(("groupvit", "mixreorg"), SCALES[args.scale], strict=True))
    steps = {method: args.steps for method in presets}
    if args.minutes:
        steps = {m: calibrated_steps(p, args.set, data, args.minutes, threads, args.work) for m, p in presets.items()}
    seeds = {variant: args.seeds for variant in args.variants}
    seeds.update({name: int(count) for name, count in (item.split("=") for item in args.seeds_of)})
    jobs = []
    # Seed by seed, so that a partial look (runs are kept and reused) already covers every row.
    for seed in range(max(seeds.values())):
        for variant in args.variants:
            if seed >= seeds[variant]:
                continue
            method = VARIANTS[variant][0]
            run_overrides = variant_overrides(variant, seed, steps[method], args.set)
            if args.eval_every:
                run_overrides += [f"train.eval_every={args.eval_every}", "train.eval_dataset=synthetic",
                                  f"train.eval_data_root={data}"]
            run = run_folder(args.world, args.scale, variant, seed, steps[method], args.set, args.work)
            jobs.append((variant, seed, run, variant_preset(variant, args.scale), run_overrides))
    with ThreadPoolExecutor(args.jobs) as pool:
        timings = list(pool.map(lambda job: train_run(job[2], job[3], job[4], data, threads), jobs))
    results: dict[str, dict] = {}
    benchmark = get_benchmark("synthetic", data)
    torch.manual_seed(0)
    untrained = build_model(load_config(presets["groupvit"], args.set)).to(device)
    results["untrained"] = {"runs": [evaluate(untrained, data, device)]}
    results["colour_clustering_oracle"] = {"runs": [colour_clustering(data)]}
    runs: dict[str, list[Path]] = {}
    for (variant, seed, run, _, _), timing in zip(jobs, timings, strict=True):
        # Kept beside the run, so a rerun with more seeds or rows evaluates only the new runs.
        cached = run / f"bench_eval_{data.name}.json"
        if cached.is_file():
            summary = json.loads(cached.read_text())
        else:
            model, _ = load_model(run / "model")
            summary = evaluate(model.to(device), data, device)
            cached.write_text(json.dumps(summary))
        key = "eval/synthetic/objects_miou"  # the periodic evaluations' objects mIoU, when --eval-every is set
        curve = {str(r["step"]): r[key] for r in read_metrics(run) if key in r}  # str: the keys JSON keeps
        results.setdefault(variant, {"runs": []})["runs"].append({"seed": seed, **timing, **summary, "curve": curve})
        runs.setdefault(variant, []).append(run)
        print(f"{variant} seed {seed}: objects {summary['objects']:.1f}, object regions "
              f"{summary['grouping']['object_region_iou']:.1f}, mIoU {summary['mIoU']:.1f} "
              f"({timing['seconds'] / 60:.1f} min)", flush=True)
    tag = "gpu" if args.device == "cuda" else "cpu"
    record = {
        "device": device_name(),
        "command": "python benchmarks/bench_learning.py " + " ".join(sys.argv[1:]),
        "world": args.world,
        "protocol": "groupvit (synthetic: short side 2x model size, window = model size)",
        "steps": steps["groupvit"] if len(set(steps.values())) == 1 else steps,
        "batch_size": load_config(presets["groupvit"], args.set).train.batch_size,
        "eval_images": len(benchmark),
        "results": results,
        "grouping_floors": grouping_floors(benchmark),
        "comparisons": [[name, VARIANTS[name][2]] for name in results if name in VARIANTS and VARIANTS[name][2]],
        "note": args.note,
    }
    stem = args.name or f"learning_{args.world}_{tag}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    report = write_report(record)
    (args.out / f"{stem}.md").write_text(report)
    _curves(runs, args.out / f"{stem}_curves.png")
    first_seeds = {variant: segments_of(load_model(folders[0] / "model")[0]) for variant, folders in runs.items()}
    group_figure(first_seeds, benchmark, args.out / f"{stem}_groups.png")
    print(report)


if __name__ == "__main__":
    main()
