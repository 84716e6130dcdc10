"""Does MixReorg learn, and does it beat GroupViT? Same budget, several seeds, on the synthetic corpus.

Trains tiny GroupViT and tiny MixReorg (plus one ablation per MixReorg part) for the same number of steps,
evaluates each on the synthetic evaluation set under the `groupvit` protocol, and records mIoU mean and
spread, per-class IoU, training time and the loss / mIoU curves. Two floors make the numbers readable: the
untrained model, and colour clustering with oracle cluster names (k-means on pixel colours per image, each
cluster named by the majority ground-truth class: the best any colour-only segmenter could do). A second
table asks whether the segments follow the objects at all, names aside (learning_groups.py), with one segment per
image and colour k-means as its floors; learning_<device>_groups.png shows each model's segments.

    python benchmarks/bench_learning.py                      # the full comparison (hours on 2 CPU cores)
    python benchmarks/bench_learning.py --steps 300 --seeds 1 --variants groupvit mixreorg   # a quick look

Results: benchmarks/results/learning_<device>.json and .md, learning_<device>_curves.png and _groups.png
(``--name`` renames). Trained runs are kept under benchmarks/work/runs and reused, so re-running a command
re-evaluates without retraining.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
from learning_groups import group_figure, grouping, grouping_floors, kmeans_colours

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work"

# name -> (preset, overrides); the ablations remove one MixReorg part each, as in the paper's Table 6.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "groupvit": ("tiny_groupvit", []),
    "mixreorg": ("tiny", []),
    "mixreorg_no_contextual": ("tiny", ["model.vision.contextual_layers=0"]),
    "mixreorg_no_progressive": ("tiny", ["model.mixing.progressive_layers=0"]),
    "mixreorg_no_restoration": ("tiny", ["loss.restoration_weight=0"]),
    "mixreorg_no_segmentation": ("tiny", ["loss.segmentation_weight=0"]),
    # Not in the paper: GroupViT plus MixReorg's contextual layer, no mixing (which part makes groups collapse?).
    "groupvit_contextual": ("tiny_groupvit", ["model.vision.contextual_layers=1"]),
    # Not in the paper: mixed patches classified among the K captions mixed together, not the whole batch.
    "mixreorg_group_texts": ("tiny", ["loss.segmentation_texts=group"]),
    # Not in the paper: the multi-label loss with other images' prompts of the same word as positives.
    "groupvit_same_word": ("tiny_groupvit", ["loss.multi_label_positives=same_word"]),
    "mixreorg_same_word": ("tiny", ["loss.multi_label_positives=same_word"]),
}


def _corpus(train_size: int, eval_size: int) -> Path:
    from mixreorg.data.synthetic import generate_corpus

    folder = WORK / f"synth_{train_size}_{eval_size}"
    if not (folder / "synth.json").is_file():
        generate_corpus(folder, train_size=train_size, eval_size=eval_size, seed=0)
    return folder


def _evaluate(checkpoint: Path | None, corpus: Path, model=None) -> dict:
    import torch

    from mixreorg.data.benchmarks import get_benchmark
    from mixreorg.evaluation.protocols import resolve_protocol
    from mixreorg.evaluation.segmentation import evaluate_segmentation

    if model is None:
        from mixreorg.checkpoint import load_model

        model, _ = load_model(checkpoint)
    benchmark = get_benchmark("synthetic", corpus)
    protocol = resolve_protocol(
        "groupvit", "synthetic", benchmark.has_background, model.cfg.vision.image_size, False, False, None
    )
    result = evaluate_segmentation(
        model.eval(), benchmark, protocol, torch.device("cpu"), batch_size=8, workers=0, progress=False
    )
    return {
        "mIoU": result.metrics["miou"],
        "per_class": result.metrics["per_class_iou"],
        "grouping": grouping(model, benchmark),
    }


def _colour_clustering(corpus: Path, clusters: int = 4, seed: int = 0) -> dict:
    """mIoU of per-image k-means on RGB with each cluster named by its majority true class (an oracle)."""
    from mixreorg.data.benchmarks import get_benchmark
    from mixreorg.evaluation.metrics import ConfusionMatrix

    benchmark = get_benchmark("synthetic", corpus)
    matrix = ConfusionMatrix(len(benchmark.classes), "cpu", benchmark.ignore_index)
    rng = np.random.default_rng(seed)
    import torch

    for index in range(len(benchmark)):
        image, label, _ = benchmark[index]
        assign = kmeans_colours(image, clusters, rng).reshape(-1)
        flat = label.reshape(-1)
        prediction = np.zeros_like(flat)
        for k in range(clusters):
            members = flat[assign == k]
            members = members[members != benchmark.ignore_index]
            if len(members):
                prediction[assign == k] = np.bincount(members).argmax()
        matrix.update(torch.from_numpy(prediction.reshape(label.shape)).long(), torch.from_numpy(label).long())
    return {"mIoU": matrix.scores(benchmark.classes).miou}


def _train(variant: str, seed: int, steps: int, corpus: Path, eval_every: int) -> tuple[Path, float]:
    import shutil

    from mixreorg.training.launch import train

    preset, overrides = VARIANTS[variant]
    run = WORK / "runs" / f"{variant}_seed{seed}_{steps}"
    if (run / "model" / "model.safetensors").is_file():
        return run, json.loads((run / "bench_time.json").read_text())["seconds"]
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    train(
        preset,
        str(corpus / "train" / "manifest.json"),
        run,
        overrides=[
            *overrides,
            f"train.seed={seed}",
            f"train.max_steps={steps}",
            f"train.save_every={steps}",
            f"train.eval_every={eval_every}",
            "train.eval_dataset=synthetic",
            f"train.eval_data_root={corpus}",
        ],
    )
    seconds = time.perf_counter() - start
    (run / "bench_time.json").write_text(json.dumps({"seconds": seconds}))
    return run, seconds


def _curves(runs: dict[str, list[Path]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mixreorg.training.logging import read_metrics

    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    loss_axis, miou_axis = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for variant, folders in runs.items():
        for number, folder in enumerate(folders):
            records = read_metrics(folder)
            label = variant if number == 0 else None
            losses = [(r["step"], r["contrastive_loss"]) for r in records if "contrastive_loss" in r]
            evals = [(r["step"], r[k]) for r in records for k in r if k.endswith("/miou")]
            color = f"C{list(runs).index(variant)}"
            if losses:
                loss_axis.plot(*zip(*losses, strict=True), color=color, alpha=0.6, label=label)
            if evals:
                miou_axis.plot(*zip(*evals, strict=True), color=color, marker="o", alpha=0.8, label=label)
    loss_axis.set(title="image-text contrastive loss (original branch)", xlabel="step")
    miou_axis.set(title="mIoU on the synthetic eval set", xlabel="step", ylabel="mIoU %")
    loss_axis.legend(fontsize=8)
    miou_axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per run (batch 32)")
    parser.add_argument("--seeds", type=int, default=3)
    extra = ("groupvit_contextual", "mixreorg_group_texts", "groupvit_same_word", "mixreorg_same_word")
    paper = [name for name in VARIANTS if name not in extra]
    parser.add_argument("--variants", nargs="+", default=paper, choices=list(VARIANTS))
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--eval-size", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=0, help="steps between mIoU points (default steps/4)")
    parser.add_argument("--name", default="", help="results file stem (default learning_<cpu|gpu>)")
    parser.add_argument("--note", default="", help="a sentence for the report, e.g. how runs shared the machine")
    args = parser.parse_args()

    import torch

    from mixreorg.checkpoint import load_model
    from mixreorg.data.benchmarks import get_benchmark
    from mixreorg.model import build_model
    from mixreorg.utils.environment import device_name

    torch.set_num_threads(2)
    corpus = _corpus(args.train_size, args.eval_size)
    benchmark = get_benchmark("synthetic", corpus)
    eval_every = args.eval_every or max(args.steps // 4, 1)
    results: dict[str, dict] = {}
    torch.manual_seed(0)
    untrained = _evaluate(None, corpus, build_model("tiny"))
    results["untrained"] = {"runs": [{"mIoU": untrained["mIoU"], "grouping": untrained["grouping"]}]}
    results["colour_clustering_oracle"] = {"runs": [{"mIoU": _colour_clustering(corpus)["mIoU"]}]}
    runs: dict[str, list[Path]] = {}
    for variant in args.variants:
        entries = []
        for seed in range(args.seeds):
            run, seconds = _train(variant, seed, args.steps, corpus, eval_every)
            summary = _evaluate(run / "model", corpus)
            entries.append({"seed": seed, "seconds": seconds, **summary})
            runs.setdefault(variant, []).append(run)
            print(f"{variant} seed {seed}: mIoU {summary['mIoU']:.2f} in {seconds / 60:.1f} min", flush=True)
        results[variant] = {"runs": entries}
    for entry in results.values():
        values = [r["mIoU"] for r in entry["runs"]]
        entry["mean"] = statistics.fmean(values)
        entry["spread"] = statistics.stdev(values) if len(values) > 1 else math.nan
    tag = "gpu" if torch.cuda.is_available() else "cpu"
    record = {
        "device": device_name(),
        "command": "python benchmarks/bench_learning.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if v != "" and k != "note"
        ),
        "protocol": "groupvit (synthetic: short side 2x model size, window = model size)",
        "steps": args.steps,
        "batch_size": 32,
        "results": results,
        "grouping_floors": grouping_floors(benchmark),
        "note": args.note,
    }
    stem = args.name or f"learning_{tag}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=1))
    report = write_report(record, stem)
    _curves(runs, RESULTS / f"{stem}_curves.png")
    first_seeds = {variant: load_model(folders[0] / "model")[0] for variant, folders in runs.items()}
    group_figure(first_seeds, benchmark, RESULTS / f"{stem}_groups.png")
    print(report)


def _class_group_mean(run: dict, names: tuple[str, ...]) -> float:
    return statistics.fmean(run["per_class"][name] for name in names)


def _mean_sd(values: list[float], digits: int = 1) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def _grouping_table(record: dict) -> list[str]:
    """Do the segments follow the objects, names aside (learning_groups.py): floors first, then the models."""
    if "grouping_floors" not in record:
        return []
    lines = [
        "",
        "Grouping, names aside: segments per image (the pixels' winning groups, whole image at the protocol's "
        "scale) and each true region's best-segment IoU, shapes and backgrounds apart; pictures in `_groups.png`. "
        "Last column: mean cosine similarity of object and background patch tokens entering the first grouping.",
        "",
        "| segments from | segments per image | shape regions IoU | background regions IoU | object-bg token cosine |",
        "|---|---|---|---|---|",
    ]
    rows = [(name, [scores]) for name, scores in record["grouping_floors"].items()]
    rows += [(name, [r["grouping"] for r in entry["runs"]]) for name, entry in record["results"].items()
             if "grouping" in entry["runs"][0]]
    for name, scores in rows:
        keys = (("segments_per_image", 2), ("shape_region_iou", 1), ("background_region_iou", 1),
                ("object_background_cosine", 2))
        cells = [_mean_sd([s[key] for s in scores], digits) if key in scores[0] else "-" for key, digits in keys]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def write_report(record: dict, stem: str) -> str:
    """The markdown table for a results record: mIoU, and the shape and background classes separately."""
    from mixreorg.data.synthetic import BACKGROUNDS, SHAPES

    lines = [
        f"# Learning benchmark ({record['device']})",
        "",
        f"`{record['command']}`; {record['steps']} steps of batch {record['batch_size']} per run; synthetic eval set, "
        f"{record['protocol']}. mean +- sd over seeds; shapes / backgrounds: mean IoU of those classes.",
        *(["", record["note"]] if record.get("note") else []),
        "",
        "| model | mIoU | shapes IoU | backgrounds IoU | runs | minutes per run |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in record["results"].items():
        runs = entry["runs"]
        miou = _mean_sd([r["mIoU"] for r in runs])
        if "per_class" in runs[0]:
            shapes = _mean_sd([_class_group_mean(r, SHAPES) for r in runs])
            backgrounds = _mean_sd([_class_group_mean(r, BACKGROUNDS) for r in runs])
            minutes = f"{statistics.fmean(r['seconds'] / 60 for r in runs):.1f}"
        else:
            shapes = backgrounds = minutes = "-"
        lines.append(f"| {name} | {miou} | {shapes} | {backgrounds} | {len(runs)} | {minutes} |")
    lines += _grouping_table(record)
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{stem}.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
